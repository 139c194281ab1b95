"""The real packaged SmolLM2-135M-Instruct: loads offline, replies, and the roles behave."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from playground.inference.generation import generate
from playground.inference.scheduler import Scheduler
from playground.inference.settings import GenerationSettings
from playground.models.roles import Models, ModelsConfig, load_models
from playground.scoring.scorer import Scorer
from tests.test_models import plain_completion_logp

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def models(default_model_dir: Path) -> Models:
    return load_models(ModelsConfig(models_dir=default_model_dir.parent))


def test_default_model_is_the_packaged_smollm2(models: Models, default_model_dir: Path) -> None:
    assert models.sft.source == str(default_model_dir)
    assert (default_model_dir / "model.safetensors").is_file()
    cfg = models.policy.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (576, 30, 49152)
    assert models.tokenizer.eos_token == "<|im_end|>" == models.tokenizer.pad_token
    assert "<|im_start|>" in models.tokenizer.chat_template


def test_chat_reply_is_real_text(models: Models) -> None:
    [reply] = generate(Scheduler(models), [models.policy], PROMPT, GenerationSettings(temperature=0, max_new_tokens=16))
    assert "Paris" in reply


def test_fresh_policy_matches_reference_and_perturbed_does_not(models: Models, default_model_dir: Path) -> None:
    completion = [{"role": "assistant", "content": "The capital of France is Paris."}]
    scorer = Scorer(models)
    plain = plain_completion_logp(default_model_dir, scorer, PROMPT, completion)  # no peft, no cache
    # Same weights, same ids; only the kernels differ (completion rows of the head vs full logits),
    # which in bf16 moves the sum by a few hundredths.
    tol = 1e-3 if models.dtype == torch.float32 else 0.1
    fresh = scorer.score_responses(PROMPT, [completion], beta=0.1)[0]
    assert fresh.logp_policy == fresh.logp_ref
    assert fresh.logp_ref == pytest.approx(plain, abs=tol)
    assert -30 < fresh.logp_ref < 0  # a fluent answer: a few nats over ~10 tokens
    lora_b = [p for n, p in models.policy.model.named_parameters() if "lora_B" in n]
    saved, served = [p.detach().clone() for p in lora_b], models.policy
    try:
        g = torch.Generator().manual_seed(0)
        for p in lora_b:
            p.data = (torch.randn(p.shape, generator=g) * 0.05).to(p.device, p.dtype)
        models.policy = replace(served, ident=f"{served.ident}+perturbed")  # new weights, new identity (a publish)
        # A new Scorer: the reference is recomputed with the perturbed adapter disabled, not read from a cache.
        moved = Scorer(models).score_responses(PROMPT, [completion], beta=0.1)[0]
    finally:
        for p, s in zip(lora_b, saved, strict=True):
            p.data = s
        models.policy = served
    assert moved.logp_ref == pytest.approx(plain, abs=tol)
    assert abs(moved.log_ratio) > 5 * tol  # 1.2 nats on CPU: a reference that kept the adapter would show
