"""The real packaged SmolLM2-135M-Instruct: loads offline, replies, and the roles behave."""

from pathlib import Path

import pytest
import torch

from playground.models.roles import Models, ModelsConfig, load_models
from playground.scoring.generation import GenerationSettings, generate
from playground.scoring.scorer import Scorer

pytestmark = pytest.mark.integration

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
    [reply] = generate(models, [models.policy], PROMPT, GenerationSettings(temperature=0, max_new_tokens=16))
    assert "Paris" in reply


def test_fresh_policy_matches_reference_and_perturbed_does_not(models: Models) -> None:
    completion = [{"role": "assistant", "content": "The capital of France is Paris."}]
    scorer = Scorer(models)
    fresh = scorer.score_responses(PROMPT, [completion], beta=0.1)[0]
    assert fresh.logp_policy == fresh.logp_ref
    assert -30 < fresh.logp_ref < 0  # a fluent answer: a few nats over ~10 tokens
    lora_b = [p for n, p in models.policy.model.named_parameters() if "lora_B" in n]
    saved = [p.detach().clone() for p in lora_b]
    try:
        g = torch.Generator().manual_seed(0)
        for p in lora_b:
            p.data = (torch.randn(p.shape, generator=g) * 0.02).to(p.device, p.dtype)
        moved = scorer.score_responses(PROMPT, [completion], beta=0.1)[0]
    finally:
        for p, s in zip(lora_b, saved, strict=True):
            p.data = s
    assert moved.logp_ref == fresh.logp_ref
    assert abs(moved.log_ratio) > 0.05
