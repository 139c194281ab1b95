"""A short DPO update of the real SmolLM2-135M-Instruct teaches a visible preference: short answers.

Chosen is a one-sentence answer, rejected the same sentence followed by three filler sentences, so
the preference is "stop after answering". Twelve steps of four pairs (about 25 s on two CPU
cores) should make the held-out implicit reward prefer the short answer, and make fresh greedy
answers to questions the training never saw shorter.
"""

import random
from pathlib import Path

import pytest

from playground.data.rows import PreferenceRow, load_pairs
from playground.inference.generation import generate
from playground.inference.scheduler import Scheduler
from playground.inference.settings import GenerationSettings
from playground.models.roles import Models, ModelsConfig, load_models
from playground.training.dpo import DPOConfig, train_dpo

pytestmark = pytest.mark.integration

FACTS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("What do bees make?", "Bees make honey."),
    ("What is the freezing point of water in Celsius?", "Water freezes at 0 degrees Celsius."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is 2 plus 2?", "2 plus 2 is 4."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("What language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
    ("What is the boiling point of water in Celsius?", "Water boils at 100 degrees Celsius."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("What is the main ingredient of bread?", "The main ingredient of bread is flour."),
    ("What animal says moo?", "A cow says moo."),
]
FILLER = [
    "This is a question that many people ask.", "There is a lot more that could be said about it.",
    "If you want to learn more, there are many books and websites on the topic.",
    "It is an interesting subject with a long history.", "Experts continue to study it today.",
    "Let me explain this in a bit more detail.", "Many students find this topic fascinating.",
    "It is also worth thinking about why this is the case.",
    "In addition, there are several related facts that are good to know.",
    "People have been curious about this for centuries.", "I hope this explanation gives you a clear picture.",
    "Of course, the details can vary depending on the context.",
]
NEW_QUESTIONS = [
    "What is the capital of Japan?", "How many months are in a year?", "What do cows drink?",
    "Name a primary color.", "What is the largest ocean on Earth?", "What is the capital of Egypt?",
    "How many sides does a triangle have?", "What fruit is yellow and curved?", "What is the sun?",
    "What do fish breathe with?",
]
GREEDY = GenerationSettings(temperature=0, max_new_tokens=48)


def prefer_short(question: str, answer: str) -> PreferenceRow:
    filler = random.Random(question).sample(FILLER, 3)
    return PreferenceRow([{"role": "user", "content": question}], [{"role": "assistant", "content": answer}],
                         [{"role": "assistant", "content": " ".join([answer, *filler])}])


def mean_answer_tokens(models: Models) -> float:
    scheduler = Scheduler(models)
    answers = [generate(scheduler, [models.policy], [{"role": "user", "content": q}], GREEDY)[0] for q in NEW_QUESTIONS]
    return sum(len(models.tokenizer(a)["input_ids"]) for a in answers) / len(answers)


def test_short_update_teaches_short_answers(default_model_dir: Path, tmp_path: Path) -> None:
    models = load_models(ModelsConfig(models_dir=default_model_dir.parent))
    before = mean_answer_tokens(models)
    result = train_dpo(models, [prefer_short(q, a) for q, a in FACTS], DPOConfig(steps=12), tmp_path)
    assert result.heldout_pairs == 5
    # Fresh adapter: every held-out margin is 0 (exactly in fp32; bf16 rounding leaves ~1e-7, so ties may break).
    assert abs(result.heldout_before.margin) < 1e-3
    assert 0.3 <= result.heldout_before.accuracy <= 0.7
    assert result.heldout_after.accuracy >= 0.8
    assert result.heldout_after.margin > 1.0
    after = mean_answer_tokens(models)  # the served policy now holds the trained adapter
    # Seen on 2 CPU cores: 34.6 → 22.7 tokens (8 steps gave 27.4). Ask for a 15 % drop.
    assert after <= 0.85 * before, (before, after)


@pytest.mark.parametrize(("loss", "settings"), [("kto", {}), ("simpo", {"beta": 2.0}), ("orpo", {})])
def test_each_loss_raises_its_heldout_metric_on_short_answers(default_model_dir: Path, tmp_path: Path, loss: str,
                                                              settings: dict) -> None:
    """docs/examples/short-answers.jsonl: KTO (on both answers of each pair) raises held-out implicit-reward
    accuracy; SimPO and ORPO, reference-free, the held-out log-prob margin log π(y_w) − log π(y_l)."""
    models = load_models(ModelsConfig(models_dir=default_model_dir.parent))
    pairs = load_pairs(Path(__file__).parents[1] / "docs" / "examples" / "short-answers.jsonl").rows
    result = train_dpo(models, pairs, DPOConfig(steps=12, loss=loss, **settings), tmp_path)
    assert result.heldout_pairs == 5
    if loss == "kto":
        assert 0.3 <= result.heldout_before.accuracy <= 0.7
        assert result.heldout_after.accuracy >= 0.8 and result.heldout_after.margin > result.heldout_before.margin
    else:
        before, after = result.heldout_logps_before, result.heldout_logps_after
        assert after.margin > before.margin + 1.0 and after.accuracy >= before.accuracy
