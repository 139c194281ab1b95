"""The LLM judge on the tiny random Llama: label tokens, constrained probabilities against a hand
computation from the model's logits, batching, both orders, and the errors a bad judge gives."""

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

import evals.llm_judge as llm
from evals.battle import Battle
from evals.judge import orders_agree, position_consistency
from evals.judges import make_judge
from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.models.roles import Models

CPU = torch.device("cpu")
# Battles of different lengths, so batches pad; short enough for the tiny model's 256 positions.
PROMPTS: list[list[Message]] = [[{"role": "user", "content": "Hi?"}], [{"role": "user", "content": "Two plus two?"}],
                                [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sea?"}]]
ANSWERS_A = ["Hello.", "Four, of course.", "Blue."]
ANSWERS_B = ["Hi there, how are you?", "5", "The sea is large and blue."]


@pytest.fixture
def short_system(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped system prompt takes most of the tiny model's 256 positions; a short one leaves room."""
    monkeypatch.setattr(llm, "SYSTEM", "Judge the answers.")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def by_hand(model_dir: Path, tokenizer: PreTrainedTokenizerBase, prompt: list[Message], a: str, b: str) -> list[float]:
    """p(A), p(B), p(tie) from one unbatched full forward: softmax over the three label logits."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(llm.judge_messages(prompt, a, b), add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    labels = [tokenizer.encode(label, add_special_tokens=False)[0] for label in ("A", "B", "tie")]
    return torch.softmax(logits[labels], dim=-1).tolist()


def test_label_tokens_follow_the_first_token_rule(tokenizer: PreTrainedTokenizerBase) -> None:
    ids = llm.label_token_ids(tokenizer)
    assert ids == tuple(tokenizer.encode(label, add_special_tokens=False)[0] for label in ("A", "B", "tie"))
    assert len(tokenizer.encode("tie", add_special_tokens=False)) > 1  # this tokenizer splits "tie": first token used
    with pytest.raises(PlaygroundError, match="starts two answer labels with the same token"):
        llm.label_token_ids(tokenizer, ("the", "then", "tie"))
    with pytest.raises(PlaygroundError, match="encodes '' to no token"):
        llm.label_token_ids(tokenizer, ("A", "", "tie"))


def test_question_text_keeps_a_conversation() -> None:
    assert llm.question_text(PROMPTS[0]) == "Hi?"
    assert llm.question_text(PROMPTS[2]) == "system: Be brief.\nuser: Sea?"
    chat = llm.judge_messages(PROMPTS[0], "x", "y")
    assert [m["role"] for m in chat] == ["system", "user"]
    assert "[Answer A]\nx" in chat[1]["content"] and chat[1]["content"].endswith("Answer with A, B or tie.")
    for criterion in ("helpfulness", "correctness", "concision"):
        assert criterion in chat[0]["content"]


def test_probabilities_are_the_softmax_of_the_label_logits(tiny_model_dir: Path, tokenizer: PreTrainedTokenizerBase,
                                                           short_system: None, tmp_path: Path) -> None:
    judge = llm.llm_judge(str(tiny_model_dir), CPU, torch.float32, models_dir=tmp_path, batch_size=2)
    assert judge.name == f"llm:{tiny_model_dir.name}"
    verdicts = judge.decide(PROMPTS, ANSWERS_A, ANSWERS_B)
    for prompt, a, b, (winner, details) in zip(PROMPTS, ANSWERS_A, ANSWERS_B, verdicts, strict=True):
        for order, (x, y) in (("ab", (a, b)), ("ba", (b, a))):  # the swapped order saw b as answer A
            got = details[order]
            assert got["p_a"] + got["p_b"] + got["p_tie"] == pytest.approx(1.0, abs=1e-6)
            assert [got["p_a"], got["p_b"], got["p_tie"]] == pytest.approx(by_hand(tiny_model_dir, tokenizer,
                                                                                    prompt, x, y), abs=1e-5)
            likeliest = max(zip((got["p_a"], got["p_b"], got["p_tie"]), ("model_a", "model_b", "tie"), strict=True))[1]
            assert got["winner"] == likeliest
        agreed = orders_agree(details["ab"]["winner"], details["ba"]["winner"])
        assert details["consistent"] == agreed
        assert winner == (details["ab"]["winner"] if agreed else "tie")
    # One forward per row gives the same numbers as batches of 2 (padding changes nothing).
    alone = llm.llm_judge(str(tiny_model_dir), CPU, torch.float32, models_dir=tmp_path, batch_size=1)
    for (_, batched), (_, single) in zip(verdicts, alone.decide(PROMPTS, ANSWERS_A, ANSWERS_B), strict=True):
        assert batched["ab"]["p_a"] == pytest.approx(single["ab"]["p_a"], abs=1e-5)
        assert batched["ba"]["p_tie"] == pytest.approx(single["ba"]["p_tie"], abs=1e-5)
    assert position_consistency([Battle("x", "y", w, details=d) for w, d in verdicts]).n == 3


def test_verdict_is_the_likeliest_label_and_an_exact_tie_is_a_tie() -> None:
    assert llm.verdict([0.2, 0.5, 0.3]) == ("model_b", {"p_a": 0.2, "p_b": 0.5, "p_tie": 0.3})
    assert llm.verdict([0.6, 0.1, 0.3])[0] == "model_a"
    assert llm.verdict([0.1, 0.1, 0.8])[0] == "tie"
    assert llm.verdict([0.4, 0.4, 0.2])[0] == "tie"


def test_make_judge_parses_the_llm_spec(tiny_state: object, tiny_model_dir: Path) -> None:
    models: Models = tiny_state.models  # type: ignore[attr-defined]
    assert make_judge(f"llm:{tiny_model_dir}", models).name == f"llm:{tiny_model_dir.name}"


def test_a_bad_judge_model_is_one_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    def load(path: str) -> None:
        llm.llm_judge(path, CPU, torch.float32, models_dir=tmp_path / "models")

    with pytest.raises(PlaygroundError, match="needs the judge model's path"):
        load(" ")
    with pytest.raises(PlaygroundError, match="no such file or folder"):
        load(str(tmp_path / "missing"))
    with pytest.raises(PlaygroundError, match=r"a hub; the judge must be a local HF model folder or \.gguf file"):
        load("some-org/some-model")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(PlaygroundError, match="a lora-adapter; the judge must be"):
        load(str(adapter))
    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink()  # where transformers 5 saves the template
    assert "chat_template" not in (plain / "tokenizer_config.json").read_text()
    judge = llm.llm_judge(str(plain), CPU, torch.float32, models_dir=tmp_path / "models")
    with pytest.raises(PlaygroundError, match="no chat template: an LLM judge needs an instruct"):
        judge.decide(PROMPTS[:1], ["x"], ["y"])


def test_a_prompt_over_the_judge_context_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    judge = llm.llm_judge(str(tiny_model_dir), CPU, torch.float32, models_dir=tmp_path)
    with pytest.raises(PlaygroundError, match=r"over the judge model's context of 256; generate shorter answers"):
        judge.decide(PROMPTS[:1], ["word " * 300], ["y"])
