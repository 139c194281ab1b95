"""RLHF (PPO, RLOO, GRPO) on the tiny random Llama: agreement with TRL 1.16's RLOOTrainer and GRPOTrainer on a
fixed rollout batch, PPO's GAE and clipped losses by hand, config checks, safety, checkpoints, the service, the CLI."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import playground.training.rlhf as rlhf
from cli.rlhf import DEFAULTS
from cli.rlhf import parse_args as rlhf_args
from playground.core.errors import PlaygroundError
from playground.data.rows import PreferenceRow
from playground.inference.settings import prompt_ids
from playground.models.checkpoints import CheckpointRecord
from playground.models.roles import LoraSettings, Models, ModelsConfig, adapter_params, load_models
from playground.scoring.encoding import Encoded
from playground.scoring.shared_prompt import TokenStats, token_stats
from playground.training.reward_model import RewardConfig, RewardModel, train_reward_model
from playground.training.rlhf import RLHFConfig, train_rlhf

PROMPTS = [[{"role": "user", "content": f"Say {word}."}] for word in ("hi", "yes", "no", "two", "sea", "sky", "bye")]
FAST = {"lr": 1e-2, "steps": 2, "batch_size": 2, "samples_per_prompt": 3, "max_new_tokens": 6}
BETA = 0.1
TOL = 1e-5

PLAYGROUND = str(Path(sys.executable).parent / "playground")  # the console script `make` installs


def preference_pairs(n: int = 6) -> list[PreferenceRow]:
    return [PreferenceRow([{"role": "user", "content": f"Question {i}?"}], [{"role": "assistant", "content": "Yes."}],
                          [{"role": "assistant", "content": "No. Bad answer, long answer."}]) for i in range(n)]


@pytest.fixture
def models(tiny_model_dir: Path) -> Models:
    return load_models(ModelsConfig(sft=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir: Path) -> RewardModel:
    tokenizer = load_models(ModelsConfig(sft=str(tiny_model_dir))).tokenizer
    model = train_reward_model(str(tiny_model_dir), tokenizer, preference_pairs(),
                               RewardConfig(steps=3, lr=1e-2, heldout=0)).model
    assert model is not None
    return model


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_same(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


# --- config ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "message"), [
    ({"method": "dpo"}, "method must be one of ppo, rloo, grpo"),
    ({"steps": 0}, r"steps must be 1\.\.10000"),
    ({"beta": 0.0}, "β must be > 0"),
    ({"lr": float("nan")}, "learning rate must be > 0"),
    ({"samples_per_prompt": 1}, "samples per prompt must be ≥ 2 for rloo and grpo"),
    ({"batch_size": 0}, "batch size"),
    ({"max_new_tokens": 0}, "max new tokens"),
    ({"max_length": 48}, "max length must exceed max new tokens"),
    ({"clip_range": 1.0}, r"clip range must be in \(0, 1\)"),
    ({"kl_penalty": "both"}, "kl penalty must be one of"),
    ({"kl_penalty": "loss"}, "kl penalty 'loss' applies to grpo only"),
    ({"kl_target": -1.0}, "KL target must be > 0"),
    ({"method": "grpo", "kl_penalty": "loss", "kl_target": 6.0}, "a KL target needs kl penalty 'reward'"),
    ({"heldout": 1.0}, "held-out fraction"),
    ({"lora": LoraSettings(r=0)}, "LoRA r"),
    ({"value_coef": 0.5}, "value_coef apply to method ppo only"),
    ({"method": "ppo", "gae_lambda": 1.5}, r"GAE lambda must be in \[0, 1\]"),
    ({"method": "ppo", "gamma": 0.0}, r"gamma must be in \(0, 1\]"),
    ({"method": "ppo", "ppo_epochs": 0}, "PPO epochs"),
    ({"method": "ppo", "minibatches": 17}, "minibatches must be 1"),
])
def test_config_validation(changes: dict, message: str) -> None:
    with pytest.raises(PlaygroundError, match=message):
        RLHFConfig(**changes).validate()


def test_config_lists_every_problem_at_once_and_ppo_takes_one_sample() -> None:
    with pytest.raises(PlaygroundError) as err:
        RLHFConfig(beta=-1, lr=0, clip_range=2, gamma=0.5).validate()
    assert str(err.value).count(";") == 3
    assert "gamma apply to method ppo only" in str(err.value)
    assert RLHFConfig(method="ppo", samples_per_prompt=1).validate().samples_per_prompt == 1


def test_cli_defaults_are_the_config_defaults() -> None:
    from dataclasses import asdict

    defaults = {k: v for k, v in asdict(RLHFConfig()).items() if k != "lora"}
    assert defaults == DEFAULTS
    args = rlhf_args(["--reward-model", "rm", "--prompts", "p.jsonl", "--out", "o"])
    assert {name: getattr(args, name) for name in DEFAULTS} == DEFAULTS


# --- the fixed rollout batch against TRL ----------------------------------------------------------------------------

K = 3
COMPLETIONS = [(5, 6, 7, 2), (8, 9), (10, 11, 12, 13, 2), (14, 2), (15, 16, 17), (18, 19, 20, 21, 22, 2)]
SCORES = [0.5, -1.0, 2.0, 0.3, 0.3, -0.7]
TRL_PROMPTS = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Say no."}]]


@pytest.fixture(scope="module")
def perturbed(tiny_model_dir: Path) -> Models:
    """The tiny model with a random LoRA B, so policy and reference differ."""
    models = load_models(ModelsConfig(sft=str(tiny_model_dir)))
    g = torch.Generator().manual_seed(0)
    for name, p in models.policy.model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    return models


@pytest.fixture(scope="module")
def batch(perturbed: Models) -> dict:
    """One fixed rollout batch: K = 3 samples of each of 2 prompts (ids, rewards), our per-token
    log-probs under the policy (with grad) and the reference, and fixed "sampling-time" log-probs
    that differ from the current ones, so importance ratios ≠ 1 and the clip binds somewhere."""
    pids = [tuple(prompt_ids(perturbed, p)[0].tolist()) for p in TRL_PROMPTS]
    assert len(pids[0]) == len(pids[1])  # TRL left-pads prompts; equal lengths keep positions identical
    rows = [Encoded(pids[i // K], c) for i, c in enumerate(COMPLETIONS)]
    pad = perturbed.tokenizer.pad_token_id
    model = perturbed.policy.model
    now = token_stats(model, rows, pad, perturbed.device)
    with torch.no_grad(), model.disable_adapter():
        ref = token_stats(model, rows, pad, perturbed.device).logps
    offsets = torch.randn(now.mask.shape, generator=torch.Generator().manual_seed(1)) * 0.3 * now.mask
    return {"pids": pids, "rows": rows, "now": now, "ref": ref, "offsets": offsets,
            "scores": torch.tensor(SCORES)}


def trl_rollout(trainer, batch: dict, grpo: bool) -> dict:
    """TRL's own `_generate_and_score_completions` on the fixed samples (its `_generate` replaced)."""
    pids = [list(batch["pids"][i // K]) for i in range(len(COMPLETIONS))]
    comps = [list(c) for c in COMPLETIONS]
    texts = ["x"] * len(comps)
    trainer._generate = ((lambda _: (pids, comps, None, texts, None, {}, None, None)) if grpo
                         else (lambda _: (pids, comps, texts)))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # what HF's training loop sets before a step
    return trainer._generate_and_score_completions([{"prompt": p} for p in TRL_PROMPTS for _ in range(K)])


def trl_trainer(perturbed: Models, tmp_path: Path, grpo: bool, beta: float, rewards: list[float]):
    """TRL's RLOOTrainer / GRPOTrainer on the policy with its adapter merged in; TRL builds the
    reference from the model's config path: the tiny base, our reference too."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    by_ids = dict(zip(COMPLETIONS, rewards, strict=True))

    def reward(prompts, completions, completion_ids, **kwargs) -> list[float]:
        return [by_ids[tuple(c)] for c in completion_ids]

    config, trainer = (GRPOConfig, GRPOTrainer) if grpo else (RLOOConfig, RLOOTrainer)
    args = config(output_dir=str(tmp_path / "trl"), bf16=False, use_cpu=True, report_to="none", num_generations=K,
                  per_device_train_batch_size=len(COMPLETIONS), beta=beta, max_completion_length=8,
                  gradient_checkpointing=False)
    policy = copy.deepcopy(perturbed.policy.model).merge_and_unload()
    return trainer(model=policy, reward_funcs=[reward], args=args,
                   train_dataset=Dataset.from_list([{"prompt": p} for p in TRL_PROMPTS]),
                   processing_class=perturbed.tokenizer)


def our_side(cfg: RLHFConfig, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(advantages, KL-penalised sequence rewards, loss, clip fraction) from the engine's functions."""
    now: TokenStats = batch["now"]
    old_at_sampling = now.logps.detach()
    rewards = rlhf.sequence_rewards(cfg, batch["scores"], (old_at_sampling - batch["ref"]) * now.mask, now.mask,
                                    cfg.beta)
    advantages = rlhf.group_advantages(cfg, rewards)
    loss, clipped = rlhf.group_loss(cfg, now.logps, old_at_sampling + batch["offsets"], batch["ref"], advantages,
                                    now.mask, cfg.beta)
    return advantages, rewards, loss, clipped


def test_rloo_matches_trl_rloo_trainer(perturbed: Models, batch: dict, tmp_path: Path) -> None:
    cfg = RLHFConfig(method="rloo", beta=BETA, samples_per_prompt=K)
    trainer = trl_trainer(perturbed, tmp_path, grpo=False, beta=BETA, rewards=SCORES)
    out = trl_rollout(trainer, batch, grpo=False)
    ours, _, loss, clipped = our_side(cfg, batch)
    # TRL's sampling-time log-probs are ours: same samples, same model.
    mask = batch["now"].mask
    assert out["old_logps"].tolist() == pytest.approx((batch["now"].logps.detach() * mask).sum(-1).tolist(), abs=TOL)
    assert out["advantages"].tolist() == pytest.approx(ours.tolist(), abs=TOL)
    assert trainer._metrics["train"]["kl"][-1] != 0  # the KL penalty is really in play
    out["old_logps"] = out["old_logps"] + (batch["offsets"] * mask).sum(-1)
    trl_loss = trainer._compute_loss(trainer.model, out)
    assert float(trl_loss) == pytest.approx(float(loss), abs=TOL)
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == pytest.approx(float(clipped), abs=TOL)
    assert 0 < float(clipped) < 1
    # The entropy TRL logs over the batch equals ours.
    with torch.no_grad():
        stats = token_stats(perturbed.policy.model, batch["rows"], perturbed.tokenizer.pad_token_id,
                            perturbed.device, entropy=True)
    assert stats.entropy is not None
    assert trainer._metrics["train"]["entropy"][-1] == pytest.approx(float(rlhf.masked_mean(stats.entropy, mask)),
                                                                     abs=TOL)


def test_grpo_kl_in_loss_matches_trl_grpo_trainer(perturbed: Models, batch: dict, tmp_path: Path) -> None:
    """TRL's GRPO (loss_type dapo, scale_rewards group): R = r_φ, β·k3·ρ per token in the loss."""
    cfg = RLHFConfig(method="grpo", beta=BETA, samples_per_prompt=K, kl_penalty="loss")
    trainer = trl_trainer(perturbed, tmp_path, grpo=True, beta=BETA, rewards=SCORES)
    out = trl_rollout(trainer, batch, grpo=True)
    ours, rewards, loss, clipped = our_side(cfg, batch)
    assert rewards.tolist() == pytest.approx(SCORES)
    assert out["advantages"].tolist() == pytest.approx(ours.tolist(), abs=TOL)
    mask = batch["now"].mask
    assert torch.allclose(out["ref_per_token_logps"] * mask, batch["ref"] * mask, atol=TOL)
    out["old_per_token_logps"] = batch["now"].logps.detach() + batch["offsets"]
    trl_loss = trainer._compute_loss(trainer.model, out)
    assert float(trl_loss) == pytest.approx(float(loss), abs=TOL)
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == pytest.approx(float(clipped), abs=TOL)


def test_grpo_kl_in_reward_matches_trl_grpo_on_the_penalised_reward(perturbed: Models, batch: dict,
                                                                    tmp_path: Path) -> None:
    """Ours by default (the issue's objective): R = r_φ − β·Σ log-ratio. TRL's GRPO with β = 0 fed that
    R as its reward computes the same advantages and loss."""
    cfg = RLHFConfig(method="grpo", beta=BETA, samples_per_prompt=K)
    ours, rewards, loss, clipped = our_side(cfg, batch)
    mask = batch["now"].mask
    kl = ((batch["now"].logps.detach() - batch["ref"]) * mask).sum(-1)
    assert rewards.tolist() == pytest.approx((batch["scores"] - BETA * kl).tolist(), abs=1e-6)
    assert kl.abs().max() > 0.01
    trainer = trl_trainer(perturbed, tmp_path, grpo=True, beta=0.0, rewards=rewards.tolist())
    out = trl_rollout(trainer, batch, grpo=True)
    assert out["advantages"].tolist() == pytest.approx(ours.tolist(), abs=TOL)
    out["old_per_token_logps"] = batch["now"].logps.detach() + batch["offsets"]
    assert float(trainer._compute_loss(trainer.model, out)) == pytest.approx(float(loss), abs=TOL)
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == pytest.approx(float(clipped), abs=TOL)


# --- the fast paths: shared prompt encoding, merged sampler ------------------------------------------------------

def test_token_stats_equal_one_full_forward_per_row(perturbed: Models) -> None:
    """Prompts of different lengths, K rows each, completions of different lengths: the log-probs,
    entropies, values and LoRA gradients from the shared-prompt forward equal the scorer's plain
    right-padded forward over whole rows (`completion_token_logps`)."""
    from playground.scoring.scorer import completion_token_logps
    from playground.training.trainee import trainable_copy

    model, pad, device = trainable_copy(perturbed.policy.model), perturbed.tokenizer.pad_token_id, perturbed.device
    prompts = [tuple(prompt_ids(perturbed, [{"role": "user", "content": text}])[0].tolist())
               for text in ("Hi.", "Name three prime numbers, please.")]
    assert len(prompts[0]) != len(prompts[1])
    rows = [Encoded(prompts[i % 2], tuple(range(5, 5 + n))) for i, n in enumerate((3, 7, 1, 5))]
    head = torch.nn.Linear(model.get_base_model().config.hidden_size, 1)
    stats = token_stats(model, rows, pad, device, width=9, entropy=True, value_head=head)
    assert stats.logps.shape == (4, 9) and stats.mask.sum(-1).tolist() == [3, 7, 1, 5]
    params = list(adapter_params(model).values())
    ours = torch.autograd.grad((stats.logps * stats.mask).sum(), params)
    plain = completion_token_logps(model, rows, pad, device)
    theirs = torch.autograd.grad(sum(lp.sum() for lp in plain), params)
    for i, lp in enumerate(plain):
        assert stats.logps[i, : len(lp)].tolist() == pytest.approx(lp.tolist(), abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(ours, theirs, strict=True))
    assert max(float(g.abs().max()) for g in theirs) > 1e-3  # the gradients compared are not all zero
    # Entropy and values from a full forward of each row alone.
    for i, r in enumerate(rows):
        ids = torch.tensor([r.input_ids])
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
        at = slice(len(r.prompt_ids) - 1, len(r.input_ids) - 1)
        log_probs = torch.log_softmax(out.logits[0, at].float(), -1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        assert stats.entropy[i, : len(r.completion_ids)].tolist() == pytest.approx(entropy.tolist(), abs=1e-5)
        values = head(out.hidden_states[-1][0, at]).squeeze(-1)
        assert stats.values[i, : len(r.completion_ids)].tolist() == pytest.approx(values.tolist(), abs=1e-5)
    assert float((stats.logps.detach() * (1 - stats.mask)).abs().sum()) == 0.0  # padding stays 0


def test_merged_sampler_is_the_trainee_and_leaves_the_served_model_alone(perturbed: Models) -> None:
    """The merged copy gives the trainee's logits, follows its adapter after an update, samples the
    same tokens (prompt cache included) as the trainee's own generate, and never writes a tensor it
    shares with the trainee or the served model."""
    from playground.training.trainee import trainable_copy

    served = snapshot(perturbed.policy.model)
    trainee = trainable_copy(perturbed.policy.model)
    sampler = rlhf.Sampler(trainee)
    assert len(sampler.merged) > 0 and sampler.model is not trainee
    ids = torch.tensor([prompt_ids(perturbed, TRL_PROMPTS[0])[0].tolist()])
    for _ in range(2):
        with torch.no_grad():
            want = trainee(input_ids=ids).logits
            got = sampler.policy()(input_ids=ids).logits
            with trainee.disable_adapter():
                base = trainee(input_ids=ids).logits
        assert torch.allclose(got, want, atol=1e-5) and (want - base).abs().max() > 1e-3
        with torch.no_grad():  # an "update": the next policy() must follow it
            for p in adapter_params(trainee).values():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.05)
    encoded = [tuple(prompt_ids(perturbed, p)[0].tolist()) for p in PROMPTS[:3]]
    settings = RLHFConfig(max_new_tokens=6).sampling(seed=11)
    rows, ended = rlhf.sample(sampler.policy(), perturbed, encoded, 2, settings)
    alone = []
    for p in encoded:  # the trainee itself, no prompt cache, one prompt at a time, greedy
        out = trainee.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               do_sample=False, max_new_tokens=6, pad_token_id=perturbed.tokenizer.pad_token_id)
        alone.append(out[0, len(p):].tolist())
    greedy, _ = rlhf.sample(sampler.policy(), perturbed, encoded, 1,
                            rlhf.GenerationSettings(temperature=0.0, max_new_tokens=6))
    end = set(rlhf.eos_ids(perturbed))
    for r, a in zip(greedy, alone, strict=True):
        stop = next((i for i, t in enumerate(a) if t in end), None)
        assert list(r.completion_ids) == (a if stop is None else a[: stop + 1])
    assert len(rows) == 6 and [r.prompt_ids for r in rows] == [p for p in encoded for _ in range(2)]
    assert all(0 < len(r.completion_ids) <= 6 for r in rows) and len(ended) == 6
    assert_same(perturbed.policy.model, served)


# --- PPO by hand ----------------------------------------------------------------------------------------------------

def test_ppo_gae_and_clipped_losses_by_hand() -> None:
    """One 3-token response: per-token rewards, GAE, whitening, the clipped surrogate and value loss,
    each written out in plain floats, against the engine's PPO functions."""
    beta, score, gamma, lam, eps, veps = 0.1, 1.0, 1.0, 0.95, 0.2, 0.2
    old, ref, new = [-1.0, -2.0, -0.5], [-1.5, -1.8, -0.5], [-0.6, -2.0, -0.9]
    old_v, new_v = [0.2, 0.4, 0.6], [0.5, 0.4, 0.9]
    r = [-beta * (o - f) for o, f in zip(old, ref, strict=True)]
    r[-1] += score
    adv, running = [0.0] * 3, 0.0
    for t in reversed(range(3)):
        delta = r[t] + gamma * (old_v[t + 1] if t < 2 else 0.0) - old_v[t]
        running = delta + gamma * lam * running
        adv[t] = running
    ret = [a + v for a, v in zip(adv, old_v, strict=True)]
    mean = sum(adv) / 3
    std = math.sqrt(sum((a - mean) ** 2 for a in adv) / 2 + 1e-8)
    white = [(a - mean) / std for a in adv]
    ratio = [math.exp(n - o) for n, o in zip(new, old, strict=True)]
    pg = [-min(p * a, min(max(p, 1 - eps), 1 + eps) * a) for p, a in zip(ratio, white, strict=True)]
    clipped_v = [ov + min(max(nv - ov, -veps), veps) for nv, ov in zip(new_v, old_v, strict=True)]
    vf = [0.5 * max((nv - R) ** 2, (cv - R) ** 2) for nv, cv, R in zip(new_v, clipped_v, ret, strict=True)]
    clip = [(p > 1 + eps and a > 0) or (p < 1 - eps and a < 0) for p, a in zip(ratio, white, strict=True)]

    cfg = RLHFConfig(method="ppo", beta=beta, gamma=gamma, gae_lambda=lam, clip_range=eps, value_clip=veps)
    t = lambda values: torch.tensor([values], dtype=torch.float64)  # noqa: E731
    mask = torch.ones(1, 3, dtype=torch.float64)
    advantages, returns = rlhf.ppo_advantages(cfg, t([score])[0], t(old), t(ref), t(old_v), mask, beta)
    assert advantages[0].tolist() == pytest.approx(white, abs=1e-9)
    assert returns[0].tolist() == pytest.approx(ret, abs=1e-12)
    policy, value, clip_fraction = rlhf.ppo_loss(cfg, t(new), t(new_v), t(old), t(old_v), advantages, returns, mask)
    assert float(policy) == pytest.approx(sum(pg) / 3, abs=1e-9)
    assert float(value) == pytest.approx(sum(vf) / 3, abs=1e-12)
    assert float(clip_fraction) == pytest.approx(sum(clip) / 3)
    assert sum(clip) == 2  # the example exercises both sides of the clip
    assert adv == pytest.approx([0.72, 0.6, 0.4])  # the hand numbers themselves, for the reader


# --- runs: learning, record, safety ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["rloo", "grpo", "ppo"])
def test_run_writes_a_checkpoint_and_serves_it(models: Models, reward_model: RewardModel, tmp_path: Path,
                                               method: str) -> None:
    seen: list[tuple[int, int, dict]] = []
    before = {n: p.detach().clone() for n, p in adapter_params(models.policy.model).items()}
    cfg = RLHFConfig(method=method, **FAST, **({"ppo_epochs": 2, "minibatches": 2} if method == "ppo" else {}))
    result = train_rlhf(models, PROMPTS, reward_model, cfg, tmp_path / "ckpt",
                        callback=lambda s, n, m: seen.append((s, n, m)), reward_model_path=tmp_path / "rm-x")
    assert [s for s, _, _ in seen] == [1, 2] and all(n == 2 for _, n, _ in seen)
    assert (result.train_prompts, result.heldout_prompts) == (6, 1)
    assert result.checkpoint is not None and result.checkpoint.parent == tmp_path / "ckpt"
    assert result.checkpoint.name.startswith(f"{method}-")  # the id names the method
    metrics = seen[0][2]
    names = {"reward", "reward_std", "kl", "non_score_reward", "objective", "beta", "entropy", "loss", "policy_loss",
             "clip_fraction", "response_length", "ended", "grad_norm", "learning_rate", "samples", "tokens",
             "rollout_seconds", "seconds"}
    assert set(metrics) == names | ({"value_loss"} if method == "ppo" else set())
    assert metrics["samples"] == 6 and metrics["kl"] == pytest.approx(0.0, abs=1e-5)  # a fresh adapter is π_ref
    assert all(math.isfinite(v) for _, _, m in seen for v in m.values())
    record = json.loads((result.checkpoint / "record.json").read_text())
    assert record["method"] == method and record["kind"] == "rlhf"
    assert record["hyperparameters"]["loss"] == method and record["hyperparameters"]["beta"] == cfg.beta
    assert record["reward_model"]["id"] == "rm-x"
    assert record["reward_model"]["pairs_sha256"] == reward_model.record["pairs"]["sha256"]
    assert [s["reward"] for s in record["steps"]] == [m["reward"] for _, _, m in seen]
    assert record["prompts"]["count"] == 7 and len(record["prompts"]["heldout_rows"]) == 1
    assert set(record["heldout_reward"]["after"]) == {"prompts", "reward", "length"}
    parsed = CheckpointRecord.parse(record)  # the Train tab's table reads it like a DPO record
    assert parsed.steps == 2 and parsed.beta == cfg.beta
    served = adapter_params(models.policy.model)
    assert any(not torch.equal(served[n], before[n]) for n in before)  # published
    assert models.policy.source == str(result.checkpoint)
    from safetensors.torch import load_file

    saved = load_file(str(result.checkpoint / "adapter_model.safetensors"))
    assert len(saved) == len(served)


def test_large_beta_with_adaptive_target_moves_beta(models: Models, reward_model: RewardModel, tmp_path: Path) -> None:
    cfg = RLHFConfig(**{**FAST, "steps": 3}, kl_target=1e-6, kl_horizon=6)
    result = train_rlhf(models, PROMPTS, reward_model, cfg, tmp_path)
    betas = [m["beta"] for m in result.steps]
    assert betas[0] == cfg.beta
    kl = [m["kl"] for m in result.steps]
    # Each step β moves by ±20% · n/horizon toward the target (n = samples in the step).
    for i in range(1, 3):
        n = result.steps[i - 1]["samples"]
        sign = 1 if kl[i - 1] > 1e-6 else -1
        assert betas[i] == pytest.approx(betas[i - 1] * (1 + sign * 0.2 * n / 6))


def bad_rewards(monkeypatch: pytest.MonkeyPatch, reward_model: RewardModel) -> None:
    monkeypatch.setattr(reward_model, "score", lambda prompts, texts, batch_size=8: [math.nan] * len(texts))


def bad_loss(monkeypatch: pytest.MonkeyPatch, reward_model: RewardModel) -> None:
    monkeypatch.setattr(rlhf, "clipped_surrogate", lambda ratio, adv, eps: ratio * math.nan)


def failing_reward_model(monkeypatch: pytest.MonkeyPatch, reward_model: RewardModel) -> None:
    def boom(prompts, texts, batch_size=8):
        raise RuntimeError("reward model exploded")
    monkeypatch.setattr(reward_model, "score", boom)


@pytest.mark.parametrize(("method", "breaks", "message"), [
    ("rloo", bad_rewards, "NaN/inf reward"),
    ("grpo", bad_loss, "the loss is nan"),
    ("ppo", bad_loss, "the loss is nan"),
    ("rloo", failing_reward_model, "RuntimeError: reward model exploded"),
])
def test_failure_keeps_the_adapter_and_writes_nothing(models: Models, reward_model: RewardModel, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, method: str, breaks,
                                                      message: str) -> None:
    before, source = snapshot(models.policy.model), models.policy.source
    breaks(monkeypatch, reward_model)
    with pytest.raises(PlaygroundError, match=rf"RLHF abandoned after 0 of 2 steps: .*{message}.*nothing was written"):
        train_rlhf(models, PROMPTS, reward_model, RLHFConfig(method=method, **FAST), tmp_path / "out")
    assert_same(models.policy.model, before)
    assert models.policy.source == source
    assert not (tmp_path / "out").exists()


def test_cancel_keeps_the_adapter_and_writes_nothing(models: Models, reward_model: RewardModel,
                                                     tmp_path: Path) -> None:
    before = snapshot(models.policy.model)
    steps: list[int] = []
    result = train_rlhf(models, PROMPTS, reward_model, RLHFConfig(**{**FAST, "steps": 3}), tmp_path / "out",
                        callback=lambda s, n, m: steps.append(s), should_stop=lambda: len(steps) >= 1)
    assert result.cancelled and result.checkpoint is None and len(result.steps) == 1
    assert_same(models.policy.model, before)
    assert not (tmp_path / "out").exists()


def test_full_model_policy_is_refused_naming_rlhf(tiny_model_dir: Path, reward_model: RewardModel,
                                                  tmp_path: Path) -> None:
    full = load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(tiny_model_dir)))
    with pytest.raises(PlaygroundError, match=r"^RLHF trains the policy's LoRA adapter, but the policy is a full"):
        train_rlhf(full, PROMPTS, reward_model, RLHFConfig(**FAST), tmp_path)
    assert not any(tmp_path.iterdir())


def test_prompt_too_long_is_one_clear_error(models: Models, reward_model: RewardModel, tmp_path: Path) -> None:
    with pytest.raises(PlaygroundError, match=r"1 prompts \(numbers 2\) leave no room for 6 new tokens"):
        train_rlhf(models, [PROMPTS[0], [{"role": "user", "content": "word " * 200}]], reward_model,
                   RLHFConfig(**FAST, max_length=120), tmp_path)


# --- the service ----------------------------------------------------------------------------------------------------

def test_start_rlhf_registers_and_serves(tiny_state, reward_model: RewardModel) -> None:
    from service.rlhf import start_rlhf
    from service.training import BUSY, checkpoint_table, reward_model_dir, reward_models

    reward_model.save(reward_model_dir(tiny_state) / "rm-test")
    assert reward_models(tiny_state) == ["rm-test"]
    run = start_rlhf(tiny_state, RLHFConfig(**FAST), PROMPTS, "rm-test")
    with pytest.raises(PlaygroundError, match=BUSY):
        start_rlhf(tiny_state, RLHFConfig(**FAST), PROMPTS, "rm-test")
    events = list(run.events())
    result = run.result(timeout=120)
    assert [e.step for e in events] == [1, 2] and "reward" in events[0].metrics
    assert result.checkpoint is not None and result.checkpoint.name in tiny_state.checkpoints
    assert tiny_state.recorded_serving() == result.checkpoint.name
    table = checkpoint_table(tiny_state)
    assert table["loss"].tolist() == ["rloo"] and table["serving"].tolist() == ["●"]
    assert not tiny_state.training.locked()


def test_start_rlhf_refuses_unknown_reward_model_and_no_prompts(tiny_state) -> None:
    from service.rlhf import start_rlhf

    with pytest.raises(PlaygroundError, match="no reward model 'nope'"):
        start_rlhf(tiny_state, RLHFConfig(), PROMPTS, "nope")
    with pytest.raises(PlaygroundError, match="needs prompts"):
        start_rlhf(tiny_state, RLHFConfig(), [], "nope")
    assert not tiny_state.training.locked()


# --- the CLI --------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_end_to_end(tiny_model_dir: Path, tmp_path: Path, home: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p.as_trl()) + "\n" for p in preference_pairs()))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p[0]["content"]}) + "\n" for p in PROMPTS))
    env = {"PLAYGROUND_HOME": str(home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    run = lambda *args: subprocess.run([PLAYGROUND, *args], capture_output=True, text=True,  # noqa: E731
                                       env=env, timeout=300)
    rm = run("reward-model", "--sft", str(tiny_model_dir), "--pairs", str(pairs), "--out",
             str(tmp_path / "rm"), "--steps", "2", "--heldout", "0")
    assert rm.returncode == 0, rm.stderr
    done = run("rlhf", "--sft", str(tiny_model_dir), "--reward-model", str(tmp_path / "rm"), "--prompts",
               str(prompts), "--out", str(tmp_path / "ckpt"), "--method", "grpo", "--steps", "2", "--batch-size", "2",
               "--samples-per-prompt", "2", "--max-new-tokens", "4")
    assert done.returncode == 0, done.stderr
    assert "step 2/2" in done.stderr and "held out    greedy reward" in done.stdout
    (folder,) = (tmp_path / "ckpt").iterdir()
    record = json.loads((folder / "record.json").read_text())
    assert record["method"] == "grpo" and len(record["steps"]) == 2
    bad = run("rlhf", "--sft", str(tiny_model_dir), "--reward-model", str(tmp_path / "rm"), "--prompts",
              str(prompts), "--out", str(tmp_path / "bad"), "--samples-per-prompt", "1", "--beta", "0")
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error: β must be > 0; samples per prompt must be ≥ 2")
    assert not (tmp_path / "bad").exists()


# --- behaviour on the real model ------------------------------------------------------------------------------------

@pytest.mark.integration
def test_real_model_rlhf_raises_reward_and_shortens_answers(default_model_dir: Path, tmp_path: Path) -> None:
    """A reward model trained on docs/examples/short-answers.jsonl (short answer ≻ the same answer plus
    filler) prefers stopping; ten RLOO steps of 4 prompts × 4 samples raise its mean reward on greedy
    answers to the 6 held-out prompts and shorten them (checked by hand: −0.76 → +1.05, 28 → 18.5
    tokens, KL ≈ 1.6 nats at the last step). With β = 2 the KL penalty dominates and the policy
    stays near the reference. About 3 minutes on two idle cores."""
    from playground.data.prompt_sets import load_prompt_file
    from playground.data.rows import load_pairs

    examples = Path(__file__).resolve().parent.parent / "docs" / "examples" / "short-answers.jsonl"
    models = load_models(ModelsConfig(models_dir=default_model_dir.parent))
    reward = train_reward_model(models.sft.source, models.tokenizer, load_pairs(examples).rows,
                                RewardConfig(steps=12, heldout=0)).model
    assert reward is not None
    prompts = [list(p.messages) for p in load_prompt_file(examples)]
    settings = {"method": "rloo", "lr": 3e-4, "batch_size": 4, "samples_per_prompt": 4, "max_new_tokens": 32,
                "heldout": 0.25}
    result = train_rlhf(models, prompts, reward, RLHFConfig(**settings, steps=10, beta=0.05), tmp_path / "a")
    before, after = result.heldout_before, result.heldout_after
    assert before is not None and after is not None and after.prompts == 6
    assert after.reward > before.reward + 0.5
    assert after.length < before.length
    kl = [m["kl"] for m in result.steps]
    assert all(math.isfinite(k) for k in kl) and kl[0] == pytest.approx(0.0, abs=1e-4)
    moved = sum(kl[-3:]) / 3
    assert moved > 0.3

    fresh = load_models(ModelsConfig(models_dir=default_model_dir.parent))
    held = train_rlhf(fresh, prompts, reward, RLHFConfig(**settings, steps=6, beta=2.0), tmp_path / "b")
    stayed = sum(m["kl"] for m in held.steps[-3:]) / 3
    assert abs(stayed) < 0.25 and abs(stayed) < moved / 3
