"""Model roles, sources and their errors, on the tiny random Llama."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from playground.core.errors import PlaygroundError
from playground.models.roles import LoraSettings, Models, ModelsConfig, load_models
from playground.models.sources import Kind, classify
from playground.scoring.scorer import Scorer

ROOT = Path(__file__).resolve().parents[1]
PAIR = ([{"role": "user", "content": "Say hi."}], [{"role": "assistant", "content": "Hello! How are you?"}])


def perturb_adapter(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = (torch.randn(p.shape, generator=g) * scale).to(p.device, p.dtype)


def perturbed_policy(models: Models, seed: int = 0, scale: float = 0.5) -> Models:
    """`models` with random LoRA weights on the served adapter and, as training's publish gives it,
    a new identity: the policy is no longer the SFT model or the reference."""
    perturb_adapter(models.policy.model, seed, scale)
    models.policy = replace(models.policy, ident=f"{models.policy.ident}+perturbed")
    return models


def plain_completion_logp(model_dir: str | Path, scorer: Scorer, prompt: list[dict[str, str]],
                          completion: list[dict[str, str]]) -> float:
    """Σ log p(completion | prompt) under the base weights loaded on their own: no peft wrapper, no
    adapter to disable, no scorer cache, full logits, on the scorer's device and dtype. What a reference
    role must reproduce whatever the policy's adapter holds (only the token ids come from `scorer`:
    the tokenization is not on trial)."""
    from transformers import AutoModelForCausalLM

    models = scorer.models
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=models.dtype, use_safetensors=True)
    plain = plain.to(models.device).eval()
    [row] = scorer.encode(prompt, [completion])
    ids = torch.tensor([row.input_ids], device=models.device)
    with torch.no_grad():
        logps = torch.log_softmax(plain(input_ids=ids).logits[0, :-1].float(), dim=-1)
    token_logps = logps.gather(1, ids[0, 1:, None]).squeeze(1)  # position t predicts token t+1
    return float(token_logps[len(row.prompt_ids) - 1:].sum())


def test_default_roles_share_one_base(tiny_model_dir: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    assert models.policy.model is models.reference.model is models.sft.model
    assert models.shares_base
    assert models.policy.adapter == "default" and models.reference.adapter is None
    trainable = [n for n, p in models.policy.model.named_parameters() if p.requires_grad]
    assert trainable == []  # serving models are frozen; training opts in explicitly
    expected = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = ("mps", torch.float32)
    assert (models.device.type, models.dtype) == expected


def test_fresh_policy_equals_reference_and_perturbed_differs(tiny_model_dir: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    scorer = Scorer(models)
    plain = plain_completion_logp(tiny_model_dir, scorer, *PAIR)
    fresh = scorer.score_responses(PAIR[0], [PAIR[1]], beta=0.1)[0]
    assert fresh.logp_policy == fresh.logp_ref
    assert fresh.reward == 0.0
    assert fresh.logp_ref == pytest.approx(plain, abs=1e-4)
    perturbed_policy(models)
    # A new Scorer has an empty reference cache: the reference is recomputed through disable_adapter
    # with the perturbed adapter in place, and must still be the plain base model's number.
    moved = Scorer(models).score_responses(PAIR[0], [PAIR[1]], beta=0.1)[0]
    assert moved.logp_ref == pytest.approx(plain, abs=1e-4)
    assert abs(moved.logp_policy - plain) > 1e-2


def test_adapter_folder_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    perturbed_policy(models, seed=1)
    expected = Scorer(models).score_responses(PAIR[0], [PAIR[1]], beta=0.1)[0].logp_policy
    models.policy.model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    reloaded = load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(tmp_path / "adapter")))
    assert reloaded.policy.source == str(tmp_path / "adapter")
    got = Scorer(reloaded).score_responses(PAIR[0], [PAIR[1]], beta=0.1)[0].logp_policy
    assert got == pytest.approx(expected, abs=1e-5)


def test_pickled_weights_are_never_loaded(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    adapter = tmp_path / "adapter"
    models.policy.model.save_pretrained(adapter, safe_serialization=False)  # adapter_model.bin: a pickle
    assert (adapter / "adapter_model.bin").is_file()
    with pytest.raises(PlaygroundError, match="safetensors only"):
        load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(adapter)))
    pickled_base = tmp_path / "pickled-base"
    base = models.sft.model.get_base_model()
    base.config.save_pretrained(pickled_base)  # transformers 5 always saves safetensors: write the pickle by hand
    torch.save(base.state_dict(), pickled_base / "pytorch_model.bin")
    models.tokenizer.save_pretrained(pickled_base)
    with pytest.raises(PlaygroundError, match="cannot load a causal language model"):
        load_models(ModelsConfig(sft=str(pickled_base)))


def test_adapter_for_another_base_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir), lora=LoraSettings(r=4)))
    models.policy.model.save_pretrained(tmp_path / "adapter")
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig.from_pretrained(tiny_model_dir)
    cfg.hidden_size, cfg.intermediate_size = 48, 96  # same architecture, other shapes
    other = tmp_path / "other-base"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(other)
    models.tokenizer.save_pretrained(other)
    with pytest.raises(PlaygroundError, match="does not fit the SFT model"):
        load_models(ModelsConfig(sft=str(other), policy=str(tmp_path / "adapter")))


def test_separate_reference_is_loaded_on_its_own(tiny_model_dir: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir), reference=str(tiny_model_dir)))
    assert models.reference.model is not models.policy.model
    assert not models.shares_base
    fresh = Scorer(models).score_responses(PAIR[0], [PAIR[1]], beta=0.1)[0]
    assert fresh.logp_policy == pytest.approx(fresh.logp_ref, abs=1e-5)


@pytest.mark.parametrize(
    ("field", "make", "message"),
    [
        ("sft", lambda d: d / "missing", "no such file or folder"),
        ("sft", lambda d: d, "neither config.json"),
        ("sft", lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt", "not a .gguf model"),
        ("sft", lambda d: (d / "broken.gguf").write_bytes(b"GGUF but not really") and d / "broken.gguf",
         "not a GGUF model file"),
        ("reference", lambda d: d / "nope" / "model", "no such file or folder"),
    ],
)
def test_bad_model_paths_name_the_path(tmp_path: Path, field: str, make, message: str) -> None:
    spec = str(make(tmp_path))
    with pytest.raises(PlaygroundError, match=message) as info:
        load_models(ModelsConfig(**{field: spec}, models_dir=tmp_path / "models"))
    assert spec in str(info.value)
    assert not list((tmp_path / "models").glob("*")) if (tmp_path / "models").exists() else True


def test_adapter_is_only_a_policy(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(PlaygroundError, match="only --policy takes an adapter"):
        load_models(ModelsConfig(sft=str(tiny_model_dir), reference=str(tmp_path)))


@pytest.mark.parametrize(("device", "message"), [("tpu", "unknown device"), ("cuda:7", "CUDA|GPU")])
def test_bad_device(tiny_model_dir: Path, device: str, message: str) -> None:
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine really has 8 GPUs")
    with pytest.raises(PlaygroundError, match=message):
        load_models(ModelsConfig(sft=str(tiny_model_dir), device=device))


def test_bad_dtype(tiny_model_dir: Path) -> None:
    with pytest.raises(PlaygroundError, match="unknown dtype 'float8'"):
        load_models(ModelsConfig(sft=str(tiny_model_dir), dtype="float8"))


def test_classify_sources(tiny_model_dir: Path) -> None:
    assert classify(None, "sft").kind is Kind.DEFAULT
    assert classify(str(tiny_model_dir), "sft").kind is Kind.HF_FOLDER
    assert classify("HuggingFaceTB/SmolLM2-135M-Instruct", "sft").kind is Kind.HUB
    with pytest.raises(PlaygroundError):
        classify("./relative/missing", "sft")


def test_hub_id_offline_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PlaygroundError, match="not a local path; the hub is switched off") as info:
        load_models(ModelsConfig(sft="no-such-org/no-such-model", models_dir=tmp_path))
    assert "no-such-org/no-such-model" in str(info.value)


@pytest.mark.slow  # a subprocess CLI
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sft", "/definitely/missing"], "error: --sft /definitely/missing: no such file or folder"),
        (["--device", "tpu"], "error: unknown device 'tpu'"),
        (["--auth", "ana:short"], "error: --auth entry 1: the password of 'ana' is shorter than 8 characters"),
    ],
)
def test_app_cli_errors_are_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PLAYGROUND_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(expected)
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # a subprocess CLI
def test_app_help_lists_every_flag() -> None:
    proc = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--sft", "--ref", "--policy", "--device", "--dtype", "--host", "--port", "--share", "--beta",
                 "--auth", "--auth-file", "--admin-password", "--admin-password-file", "--max-batch", "--max-waiting",
                 "--per-session", "--serial"):
        assert flag in proc.stdout


@pytest.mark.slow  # a subprocess CLI
def test_bad_generation_flags_are_one_line_naming_each(tmp_path: Path) -> None:
    env = {**os.environ, "PLAYGROUND_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "app.py", "--max-batch", "0", "--per-session", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "max batch must be 1..4096 rows; per-session rows must be 1..4096" in proc.stderr
    assert not (tmp_path / "votes.sqlite").exists()  # refused before the models and the store were opened


def test_serving_never_makes_weights_trainable(tiny_model_dir: Path) -> None:
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    Scorer(models).score_responses(PAIR[0], [PAIR[1]], beta=0.1)  # activates the policy adapter
    assert [n for n, p in models.policy.model.named_parameters() if p.requires_grad] == []
