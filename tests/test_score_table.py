"""The numbers under each Playground response: the KL estimate on the sampled ids and when it is
flagged, the one truncation limit, the reference cache key and β's check (tiny model)."""

import math
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_SEQUENCE_TOKENS
from playground.inference.generation import Generation, stream_generate
from playground.inference.scheduler import Scheduler
from playground.inference.settings import CUT, ENDED, STOPPED, GenerationSettings
from playground.models.catalog import Catalog
from playground.models.roles import Models, ModelsConfig, load_models
from playground.scoring.rounds import Round, chat_messages, score_round
from playground.scoring.scorer import Scorer
from playground.training.dpo import DPOConfig
from tests.test_models import perturbed_policy
from ui.render import score_table

UNBIASED = GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=6, seed=3)
MESSAGES = tuple(chat_messages("Say hi."))


@pytest.fixture
def models(tiny_model_dir: Path) -> Models:
    return perturbed_policy(load_models(ModelsConfig(sft=str(tiny_model_dir))))


def run_round(models: Models, settings: GenerationSettings, scorer: Scorer | None = None,
              stop: threading.Event | None = None) -> tuple[Round, Generation, Scorer]:
    """Generate from [policy, reference], score, and return the round and the final generation."""
    scorer = scorer or Scorer(models)
    slots = [models.policy, models.reference]
    rnd = Round(messages=MESSAGES, models=("policy", "reference"), settings=settings, beta=0.1)
    steps: list[Generation] = []
    for step in stream_generate(Scheduler(models), slots, MESSAGES, settings, stop):
        steps.append(step)
        if stop is not None:
            stop.set()  # after the first step: both rows are cut by Stop
    return score_round(scorer, Catalog(models), rnd, steps[-1]), steps[-1], scorer


def kl_row(table: str) -> str:
    [row] = [line for line in table.splitlines() if line.startswith("| KL estimate")]
    return row.split("|")[2].strip()


def independent_log_ratio_sum(models: Models, prompt: tuple[int, ...], sampled: tuple[int, ...]) -> float:
    """Σ_t [log π_θ − log π_ref](y_t) from two plain full forwards (adapter on, adapter off)."""
    ids = torch.tensor([prompt + sampled])
    peft = models.policy.model
    with torch.no_grad():
        peft.set_adapter("default")
        on = torch.log_softmax(peft(input_ids=ids).logits[0, :-1].float(), -1)
        with peft.disable_adapter():
            off = torch.log_softmax(peft(input_ids=ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:, None]
    start = len(prompt) - 1
    policy, ref = on.gather(1, targets)[start:, 0], off.gather(1, targets)[start:, 0]
    assert not torch.allclose(policy, ref)  # the adapter matters, so the check can fail
    return float((policy - ref).sum())


def test_settings_name_every_bias() -> None:
    assert GenerationSettings().sampling_bias() == ["T = 0.7", "top-p 0.9", "top-k 50"]
    assert GenerationSettings(temperature=1.0).sampling_bias() == ["top-p 0.9", "top-k 50"]
    assert GenerationSettings(temperature=0).sampling_bias() == ["greedy (T = 0)"]
    assert replace(UNBIASED, repetition_penalty=1.2).sampling_bias() == ["repetition penalty 1.2"]
    assert UNBIASED.sampling_bias() == []


def test_default_sampling_at_t1_is_flagged(models: Models) -> None:
    """The issue's case: T = 1 with the default top-p 0.9 and top-k 50 showed a number unflagged."""
    rnd, final, scorer = run_round(models, GenerationSettings(temperature=1.0, max_new_tokens=4, seed=1))
    assert final.endings == (CUT, CUT) and [len(t) for t in final.token_ids] == [4, 4]
    policy_kl, ref_kl = rnd.kl
    assert policy_kl.value is None
    assert kl_row(score_table(rnd.scores[0], policy_kl, scorer.max_length)) == \
        "—, biased: top-p 0.9, top-k 50, cut at max new tokens"
    assert kl_row(score_table(rnd.scores[1], ref_kl, scorer.max_length)) == "— (not sampled from π_θ)"


def test_cut_at_max_new_tokens_is_flagged(models: Models) -> None:
    rnd, final, scorer = run_round(models, replace(UNBIASED, max_new_tokens=3))
    assert final.endings[0] == CUT and len(final.token_ids[0]) == 3
    assert kl_row(score_table(rnd.scores[0], rnd.kl[0], scorer.max_length)) == "—, biased: cut at max new tokens"


def test_greedy_and_repetition_penalty_are_flagged(models: Models) -> None:
    rnd, _, scorer = run_round(models, replace(UNBIASED, temperature=0, repetition_penalty=1.3, max_new_tokens=2))
    assert kl_row(score_table(rnd.scores[0], rnd.kl[0], scorer.max_length)) == \
        "—, biased: greedy (T = 0), repetition penalty 1.3, cut at max new tokens"


def test_stopped_is_flagged(models: Models) -> None:
    rnd, final, scorer = run_round(models, replace(UNBIASED, max_new_tokens=50), stop=threading.Event())
    assert final.endings == (STOPPED, STOPPED)
    assert 1 <= len(final.token_ids[0]) < 50
    assert kl_row(score_table(rnd.scores[0], rnd.kl[0], scorer.max_length)) == "—, biased: stopped"


def test_unflagged_kl_is_the_log_ratio_sum_over_the_sampled_ids(models: Models) -> None:
    """Unbiased settings and a response that ended by itself: the number shown is Σ log-ratio over
    exactly the sampled ids (end-of-turn token included), not over a re-encoding of the text."""
    *_, first = stream_generate(Scheduler(models), [models.policy, models.reference], MESSAGES, UNBIASED)
    # The tiny model rarely samples <|im_end|>; declare a later token of this sample (its first
    # repeat-free one after the start) an end token too, so the same seeded sample ends there.
    sample = first.token_ids[0]
    n = next(i for i in range(1, len(sample)) if sample[i] not in sample[:i]) + 1
    config = models.policy.model.generation_config
    config.eos_token_id = [config.eos_token_id, sample[n - 1]]
    rnd, final, scorer = run_round(models, UNBIASED)
    assert final.endings[0] == ENDED and final.token_ids[0] == sample[:n]
    kl = rnd.kl[0]
    expected = independent_log_ratio_sum(models, final.prompt_ids, final.token_ids[0])
    assert kl.from_policy and kl.biased == () and kl.value == pytest.approx(expected, abs=1e-4)
    assert kl_row(score_table(rnd.scores[0], kl, scorer.max_length)) == f"{expected:+.3f}"
    # The re-encoded text ends "<|im_end|>\n" and tokenizes differently: another number.
    assert not math.isclose(rnd.scores[0].log_ratio, kl.value, abs_tol=1e-4)


def test_one_truncation_limit_shown_when_it_bites(models: Models) -> None:
    assert DPOConfig().max_length == MAX_SEQUENCE_TOKENS == 1024
    assert Scorer(models).max_length == 256  # the tiny model's context is shorter than the limit
    short = Scorer(models, max_length=30)
    rnd, final, _ = run_round(models, replace(UNBIASED, max_new_tokens=20), scorer=short)
    assert len(final.prompt_ids) + 20 > 30
    table = score_table(rnd.scores[0], rnd.kl[0], short.max_length)
    assert rnd.scores[0].truncated
    assert f"| tokens (end-of-turn incl.) | {rnd.scores[0].n_tokens} (prompt+response cut to 30 tokens) |" in table
    assert kl_row(table) == "—, biased: cut at max new tokens, cut to 30 tokens"
    full, *_ = run_round(models, replace(UNBIASED, max_new_tokens=20))
    assert not full.scores[0].truncated
    assert "cut to" not in score_table(full.scores[0], full.kl[0], 256)


def test_reference_cache_is_keyed_on_the_scored_ids(models: Models) -> None:
    """Where a prompt's completions start depends on all of them: "s Paris." merges with the
    prompt's last token, so next to it " Paris." is scored from an earlier point. A cache keyed on
    (prompt, completion) text served the 5-token reference row for the 3-token one."""
    prompt = "The capital of France i"
    scorer = Scorer(models)
    merged = scorer.score_responses(prompt, [" Paris.", "s Paris."], beta=0.1)
    plain = scorer.score_responses(prompt, [" Paris.", " Berlin."], beta=0.1)
    fresh = Scorer(models).score_responses(prompt, [" Paris.", " Berlin."], beta=0.1)
    assert (merged[0].n_tokens, plain[0].n_tokens) == (5, 3)
    assert plain[0].logp_ref == pytest.approx(fresh[0].logp_ref, abs=1e-6)
    assert plain[0].logp_ref != pytest.approx(merged[0].logp_ref, abs=1e-3)


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan"), float("inf")])
def test_beta_must_be_positive(models: Models, beta: float) -> None:
    scorer = Scorer(models)
    with pytest.raises(PlaygroundError, match="β must be > 0"):
        scorer.score_responses("Hi", [" there"], beta=beta)
    with pytest.raises(PlaygroundError, match="β must be > 0"):
        scorer.score_pairs([("Hi", " there", " you")], beta=beta)
    rnd = Round(messages=MESSAGES, models=("policy", "reference"), settings=UNBIASED, beta=beta)
    generation = Generation((1,), ("a", "b"), ((5,), (6,)), (CUT, CUT), (models.policy.ident, models.sft.ident))
    with pytest.raises(PlaygroundError, match="β must be > 0"):
        score_round(scorer, Catalog(models), rnd, generation)
