"""RLHF's second half: optimise the policy's LoRA adapter online against a trained reward model r_φ,

    max_θ  E_{x∼D, y∼π_θ(·|x)} [ r_φ(x, y) ] − β · KL( π_θ(·|x) ‖ π_ref(·|x) ),

with PPO, RLOO or GRPO (formulas in `objectives`). Only the policy's LoRA weights train (and, for
PPO, a small value head); the reference stays frozen and the reward model fixed.

A step. Take the step's P prompts (`batch_size`; each epoch of the prompts shuffled and
length-bucketed, `dpo.batch_schedule`), sample K responses per prompt (`samples_per_prompt`) from
the current policy at temperature 1 with no top-k/top-p (so Σ_t log π_θ/π_ref over a sample is an
unbiased KL estimate, `Scorer.sampled_log_ratios`), score each decoded response with r_φ (its text
re-encoded with the chat template, as the reward model was trained and as TRL does), compute the
per-token log-ratio to the reference on the sampled ids, then:

- rloo: sequence reward R = Σ_t r_t (`kl_penalized_rewards`: r_φ at the last token, −β·log-ratio at
  every token), leave-one-out advantages over each prompt's K samples (`rloo_advantages`), the
  clipped surrogate on the sequence ratio, mean over sequences: TRL 1.16's RLOOTrainer exactly
  (its KL is in the reward too).
- grpo: the same R, group-normalised advantages (`group_normalized_advantages`), the clipped
  surrogate per token, summed over the batch's tokens and divided by their number (TRL's default
  `loss_type="dapo"`). `kl_penalty="loss"` is TRL's GRPO instead: R = r_φ alone and β·k3 per token
  (times the importance ratio, TRL's `use_bias_correction_kl`) added to the loss.
- ppo: per-token rewards r_t, GAE advantages (`gae`, λ, γ) against a value head, whitened over the
  batch; `ppo_epochs` passes over the rollout in `minibatches` minibatches, each one AdamW step on
  the clipped surrogate + `value_coef` · the clipped value loss (per-token means). The value head is
  a zero-initialised linear map of the policy's last hidden state at the position that predicts
  the token (float32), trained with the adapter (its gradient reaches the LoRA weights, as TRL's
  old `AutoModelForCausalLMWithValueHead`); it is dropped at the end of the run.

rloo and grpo take one optimizer step per rollout (TRL's default `num_iterations=1`), so the
policy that sampled is the one being differentiated: its log-probs come from the training forward
itself (detached for the KL penalty and the ratio's denominator, so ρ = 1 and the clip is inactive
on the first step), which saves TRL's separate "old log-prob" pass. With `kl_target` set, β follows
Ziegler et al.'s adaptive controller (`adaptive_kl_beta`) after every step.

Generation. The trainee samples through `Sampler`: a plain copy of the base model sharing every
frozen weight, whose LoRA-wrapped projections are replaced by linear maps holding the merged
weights W + scale·B·A, brought up to date before every rollout (sampling then pays for no LoRA
branch per projection; the shared weights are never written, so the reference and the served
model are untouched). It samples with transformers' `generate`, one left-padded batch of all P·K
rows, each prompt but its last token encoded once and its KV cache shared by the prompt's K rows
(`prompt_cache`), with the shared generation code's settings (`GenerationSettings.generate_kwargs`,
T = 1, no top-k/top-p) and its end-of-turn ids (`eos_ids`). `stream_generate` itself is not used: it
batches one prompt's slots at a time and holds `models.lock` for the whole generate (serving would
wait for every rollout), while the copy needs no lock: it shares only frozen weights with the
served model. Log-probs for the loss and the KL come from the trainee itself (`token_stats`, the
same shared prompt encoding), so the merged copy's float rounding never enters the objective.

Safety is DPO's (`dpo` module docstring): train a copy, publish at the end under `models.lock`.
A NaN/inf reward, loss or gradient, a cancel (`should_stop`, asked before every step) or any
exception drops the copy: the served adapter stays bit-identical and nothing is written. A finished
run writes a checkpoint folder (`checkpoints.write_checkpoint`: adapter + record.json) and serves it.

Held-out prompts (`heldout`, a seeded share as in DPO; none below 5 prompts) never train: before and
after the run each gets one greedy answer (T = 0) from the policy, and the record keeps the reward
model's mean reward and the mean answer length in tokens (`heldout_reward`).

Per-step metrics (means over the step's samples; `callback(step, total_steps, metrics)`):
  reward         mean r_φ(x, y) of the samples (without the KL penalty)
  reward_std     its standard deviation
  kl             mean Σ_t log π_θ/π_ref(y_t), nats per response (the Dashboard's estimator)
  non_score_reward  −β·kl
  objective      reward − β·kl, the quantity RLHF maximises
  beta           β used this step (moves with `kl_target`)
  entropy        mean per-token entropy of π_θ over the sampled tokens
  loss           the optimised loss (PPO: policy + value_coef·value, averaged over its updates)
  policy_loss    the clipped surrogate alone
  clip_fraction  share of surrogate terms (tokens; RLOO: sequences) where the clip binds
  value_loss     ppo only: the clipped value loss
  response_length  mean sampled tokens per response; ended: share that ended by themselves
  grad_norm      L2 norm of the gradient before clipping (PPO: mean over its updates)
  learning_rate, samples (P·K), tokens (sampled completion tokens), rollout_seconds (sampling and
  scoring), seconds (the whole step)
"""

import copy
import hashlib
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer

from playground.core.beta import BETA_RULE, beta_ok
from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_NEW_TOKENS, MAX_SEQUENCE_TOKENS, MAX_TRAIN_STEPS
from playground.inference.settings import GenerationSettings, eos_ids, prompt_ids
from playground.models.checkpoints import publish_trained
from playground.models.roles import POLICY_ADAPTER, LoraSettings, Models, adapter_params
from playground.objectives import (
    adaptive_kl_beta,
    clip_active,
    clipped_surrogate,
    clipped_value_loss,
    gae,
    group_normalized_advantages,
    k3_kl,
    kl_penalized_rewards,
    rloo_advantages,
    whiten,
)
from playground.scoring.encoding import Encoded
from playground.scoring.shared_prompt import prompt_cache, split_model, token_stats
from playground.training.dpo import batch_schedule, heldout_count, parent_record
from playground.training.loop import Callback, Metrics, abandoned, optimizer_step
from playground.training.reward_model import RewardModel
from playground.training.trainee import check_policy, reference_model, trainable_copy

METHODS = ("ppo", "rloo", "grpo")
KL_PENALTIES = ("reward", "loss")  # where β·KL enters: the reward (the objective above), or GRPO's loss (TRL)
MIN_PROMPTS = 1
EVAL_BATCH = 8  # held-out prompts per greedy generate

Prompt = list[Message]


@dataclass(frozen=True)
class RLHFConfig:
    """One RLHF run's settings; `validate()` before use. Defaults: TRL's where it has one (clip range
    0.2, RLOO's β 0.05, PPO's value coefficient 0.1, value clip 0.2, λ 0.95, γ 1, 4 PPO epochs, KL
    horizon 10000), LoRA-sized learning rate. The PPO-only settings may differ from their defaults
    only with method ppo."""

    method: str = "rloo"
    steps: int = 20  # rollouts; rloo and grpo take one optimizer step each
    beta: float = 0.05  # β on KL(π_θ ‖ π_ref); the initial value when kl_target is set
    lr: float = 1e-4
    samples_per_prompt: int = 4  # K
    batch_size: int = 4  # prompts per step (P)
    max_new_tokens: int = 48
    seed: int = 0  # prompt order, the held-out split, sampling, PPO's minibatch order
    clip_range: float = 0.2  # ε of the clipped surrogate
    kl_penalty: str = "reward"
    kl_target: float | None = None  # nats per response; None: β stays fixed
    kl_horizon: int = 10_000
    heldout: float = 0.2  # share of prompts held out (none below 5 prompts)
    max_grad_norm: float = 1.0
    lora: LoraSettings = field(default_factory=LoraSettings)  # must describe the policy's adapter (checked)
    max_length: int = MAX_SEQUENCE_TOKENS  # prompt + max_new_tokens must fit
    value_coef: float = 0.1  # ppo only
    value_clip: float = 0.2  # ppo only
    gae_lambda: float = 0.95  # ppo only
    gamma: float = 1.0  # ppo only
    ppo_epochs: int = 4  # ppo only: passes over each rollout
    minibatches: int = 1  # ppo only: optimizer steps per pass

    def validate(self) -> "RLHFConfig":
        """Raise a `PlaygroundError` listing every bad setting; return self."""
        ppo = self.method == "ppo"
        defaults = RLHFConfig()
        ppo_only = [name for name in ("value_coef", "value_clip", "gae_lambda", "gamma", "ppo_epochs", "minibatches")
                    if getattr(self, name) != getattr(defaults, name)]
        finite = math.isfinite
        checks = [
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}"),
            (isinstance(self.steps, int) and 1 <= self.steps <= MAX_TRAIN_STEPS, f"steps must be 1..{MAX_TRAIN_STEPS}"),
            (beta_ok(self.beta), BETA_RULE),
            (finite(self.lr) and self.lr > 0, "learning rate must be > 0"),
            (self.samples_per_prompt >= (1 if ppo else 2),
             "samples per prompt must be ≥ 2 for rloo and grpo (their baseline is the other samples), ≥ 1 for ppo"),
            (self.batch_size >= 1, "batch size (prompts per step) must be ≥ 1"),
            (1 <= self.max_new_tokens <= MAX_NEW_TOKENS, f"max new tokens must be 1..{MAX_NEW_TOKENS}"),
            (self.max_length > self.max_new_tokens, "max length must exceed max new tokens"),
            (finite(self.clip_range) and 0 < self.clip_range < 1, "clip range must be in (0, 1)"),
            (self.kl_penalty in KL_PENALTIES, f"kl penalty must be one of {', '.join(KL_PENALTIES)}"),
            (self.kl_penalty == "reward" or self.method == "grpo", "kl penalty 'loss' applies to grpo only"),
            (self.kl_target is None or (finite(self.kl_target) and self.kl_target > 0), "KL target must be > 0"),
            (self.kl_target is None or self.kl_penalty == "reward", "a KL target needs kl penalty 'reward'"),
            (self.kl_horizon >= 1, "KL horizon must be ≥ 1"),
            (0 <= self.heldout < 1, "held-out fraction must be in [0, 1)"),
            (finite(self.max_grad_norm) and self.max_grad_norm > 0, "max grad norm must be > 0"),
            (self.lora.r >= 1 and self.lora.alpha > 0, "LoRA r must be ≥ 1 and alpha > 0"),
            (len(self.lora.targets) > 0, "LoRA needs at least one target module"),
            (finite(self.value_coef) and self.value_coef > 0, "value coefficient must be > 0"),
            (finite(self.value_clip) and self.value_clip > 0, "value clip must be > 0"),
            (finite(self.gae_lambda) and 0 <= self.gae_lambda <= 1, "GAE lambda must be in [0, 1]"),
            (finite(self.gamma) and 0 < self.gamma <= 1, "gamma must be in (0, 1]"),
            (1 <= self.ppo_epochs <= 100, "PPO epochs must be 1..100"),
            (1 <= self.minibatches <= self.batch_size * self.samples_per_prompt,
             "minibatches must be 1..(batch size × samples per prompt)"),
            (ppo or not ppo_only, f"{', '.join(ppo_only)} apply to method ppo only"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise PlaygroundError("; ".join(problems))
        return self

    def sampling(self, seed: int) -> GenerationSettings:
        """Rollout sampling: the policy's own distribution (T = 1, no top-k/top-p, no penalty)."""
        return GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=self.max_new_tokens,
                                  repetition_penalty=1.0, seed=seed)


@dataclass(frozen=True)
class HeldOutReward:
    """Greedy answers to the held-out prompts at one moment: the reward model's mean reward and length."""

    prompts: int
    reward: float
    length: float  # mean answer tokens (end-of-turn included)


@dataclass(frozen=True)
class RLHFResult:
    steps: list[Metrics]  # one entry per step taken
    total_steps: int
    prompts: int  # train + held out
    train_prompts: int
    heldout_prompts: int
    heldout_before: HeldOutReward | None  # None when nothing was held out
    heldout_after: HeldOutReward | None
    seconds: float
    checkpoint: Path | None = None  # None when cancelled
    cancelled: bool = False


@dataclass(frozen=True)
class Rollout:
    """One step's samples, K consecutive rows per prompt: each row's prompt ids + sampled ids
    (end-of-turn included), its decoded text, whether it ended by itself, and its r_φ score."""

    rows: list[Encoded]
    texts: list[str]
    ended: list[bool]
    scores: torch.Tensor  # (N,) float32


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def sequence_rewards(cfg: RLHFConfig, scores: torch.Tensor, ref_logratio: torch.Tensor, mask: torch.Tensor,
                     beta: float) -> torch.Tensor:
    """R per sample (N,): r_φ − β·Σ_t log π_θ/π_ref (`kl_penalized_rewards` summed), or r_φ alone when
    the KL is in GRPO's loss."""
    if cfg.kl_penalty == "loss":
        return scores
    return kl_penalized_rewards(scores, ref_logratio, mask, beta).sum(-1)


def group_advantages(cfg: RLHFConfig, rewards: torch.Tensor) -> torch.Tensor:
    """rloo or grpo advantages (N,) from sequence rewards (N,), K consecutive samples per prompt."""
    grouped = rewards.view(-1, cfg.samples_per_prompt)
    advantages = rloo_advantages(grouped) if cfg.method == "rloo" else group_normalized_advantages(grouped)
    return advantages.flatten()


def group_loss(cfg: RLHFConfig, logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
               advantages: torch.Tensor, mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clip fraction) of rloo or grpo from per-token log-probs (B, T) now, at sampling time and
    under the reference (needed only for `kl_penalty="loss"`), and per-sample advantages (B,)."""
    if cfg.method == "rloo":  # TRL's RLOO: one importance ratio per sequence
        seq_ratio = ((logps - old_logps) * mask).sum(-1)
        loss = clipped_surrogate(seq_ratio, advantages, cfg.clip_range).mean()
        return loss, clip_active(seq_ratio.detach(), advantages, cfg.clip_range).float().mean()
    ratio = logps - old_logps
    per_token = clipped_surrogate(ratio, advantages[:, None], cfg.clip_range)
    if cfg.kl_penalty == "loss":
        assert ref_logps is not None
        per_token = per_token + beta * k3_kl(logps - ref_logps) * torch.exp(ratio)
    clipped = clip_active(ratio.detach(), advantages[:, None].expand_as(ratio), cfg.clip_range).float()
    # DAPO aggregation (TRL's default): the batch's token terms summed over its token count.
    return (per_token * mask).sum() / mask.sum().clamp(min=1), masked_mean(clipped, mask)


def ppo_advantages(cfg: RLHFConfig, scores: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor,
                   old_values: torch.Tensor, mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's whitened GAE advantages and returns (B, T) from a rollout's scores (B,), its per-token
    log-probs at sampling time and under the reference, and the value head's values (B, T)."""
    rewards = kl_penalized_rewards(scores, (old_logps - ref_logps) * mask, mask, beta)
    advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.gae_lambda)
    return whiten(advantages, mask), returns


def ppo_loss(cfg: RLHFConfig, logps: torch.Tensor, values: torch.Tensor, old_logps: torch.Tensor,
             old_values: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clipped surrogate, clipped value loss, clip fraction), each a per-token mean over `mask`."""
    ratio = logps - old_logps
    policy = masked_mean(clipped_surrogate(ratio, advantages, cfg.clip_range), mask)
    value = masked_mean(clipped_value_loss(values, old_values, returns, cfg.value_clip), mask)
    return policy, value, masked_mean(clip_active(ratio.detach(), advantages, cfg.clip_range).float(), mask)


class Sampler:
    """The trainee as a plain model for generation: a module tree sharing every tensor of the
    trainee's base model except the policy adapter's LoRA-wrapped linear layers, each replaced by a
    linear map of its own holding the merged weight W + scale·B·A (`policy()` recomputes them from
    the trainee's current adapter). Sampling then runs the base model's own layers with no LoRA
    branch per projection; the trainee, the reference (adapter off) and the served model are never
    touched. An adapter peft cannot merge as a plain delta (DoRA, a LoRA bias, several active
    adapters, a non-linear target) samples through the trainee itself."""

    def __init__(self, trainee: PeftModel) -> None:
        base = trainee.get_base_model()
        layers = {name: m for name, m in base.named_modules()
                  if isinstance(m, LoraLayer) and POLICY_ADAPTER in m.lora_A}
        self.merged: list[tuple[LoraLinear, torch.nn.Linear]] = []
        self.model: torch.nn.Module = trainee
        if trainee.active_adapters != [POLICY_ADAPTER] or not all(
                type(m) is LoraLinear and type(m.base_layer) is torch.nn.Linear and not m.lora_bias[POLICY_ADAPTER]
                and POLICY_ADAPTER not in m.lora_variant for m in layers.values()):
            return
        memo: dict[int, Any] = {id(t): t for t in itertools.chain(base.parameters(), base.buffers())}
        self.model = copy.deepcopy(base, memo)  # new modules, the same tensors
        for name, layer in layers.items():
            source = layer.base_layer
            merged = torch.nn.Linear(source.in_features, source.out_features, bias=False, device="meta")
            merged.weight = torch.nn.Parameter(torch.empty_like(source.weight), requires_grad=False)
            merged.bias = source.bias
            self.model.set_submodule(name, merged)
            self.merged.append((layer, merged))

    def policy(self) -> torch.nn.Module:
        """The model to sample the trainee's current policy from (merged weights brought up to date)."""
        with torch.no_grad():
            for layer, merged in self.merged:
                torch.add(layer.base_layer.weight, layer.get_delta_weight(POLICY_ADAPTER), out=merged.weight)
        return self.model


def sample(model: torch.nn.Module, models: Models, prompts: Sequence[tuple[int, ...]], k: int,
           settings: GenerationSettings) -> tuple[list[Encoded], list[bool]]:
    """k responses to each prompt (ids) in one left-padded batched `generate` of `model`, seeded with
    `settings.seed`, each prompt but its last token encoded once (`prompt_cache`): rows (prompt ids,
    sampled ids up to and including the first end-of-turn id), k consecutive rows per prompt, and
    whether each ended by itself."""
    pad_id = models.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    batch = [p for p in prompts for _ in range(k)]
    ids = torch.tensor([(pad_id,) * (width - len(p)) + p for p in batch], device=models.device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=models.device)
    end = set(eos_ids(models))
    split = split_model(model)
    with torch.inference_mode():
        cache, _ = prompt_cache(split[0] if split is not None else model, batch, pad_id, models.device)
        torch.manual_seed(settings.seed)
        out = model.generate(input_ids=ids, attention_mask=attn, pad_token_id=pad_id, past_key_values=cache,
                             **settings.generate_kwargs())
    rows, ended = [], []
    for p, new in zip(batch, out[:, width:].tolist(), strict=True):
        stop = next((i for i, t in enumerate(new) if t in end), None)
        rows.append(Encoded(p, tuple(new if stop is None else new[: stop + 1])))
        ended.append(stop is not None)
    return rows, ended


def _texts(models: Models, rows: Sequence[Encoded], ended: Sequence[bool]) -> list[str]:
    return [models.tokenizer.decode(r.completion_ids[:-1] if e else r.completion_ids, skip_special_tokens=True)
            for r, e in zip(rows, ended, strict=True)]


def rollout(model: torch.nn.Module, models: Models, reward_model: RewardModel, prompts: Sequence[Prompt],
            encoded: Sequence[tuple[int, ...]], k: int, settings: GenerationSettings) -> Rollout:
    """Sample k responses per prompt and score each with the reward model (module docstring)."""
    rows, ended = sample(model, models, encoded, k, settings)
    texts = _texts(models, rows, ended)
    # One batch, as the rows were sampled: one pass over the reward model's weights, not one per 8 rows.
    scores = reward_model.score([prompts[i // k] for i in range(len(rows))], texts, batch_size=len(rows))
    values = torch.tensor(scores, dtype=torch.float32, device=models.device)
    if not torch.isfinite(values).all():
        raise PlaygroundError("the reward model returned a NaN/inf reward")
    return Rollout(rows, texts, ended, values)


def evaluate(model: torch.nn.Module, models: Models, reward_model: RewardModel, prompts: Sequence[Prompt],
             encoded: Sequence[tuple[int, ...]], max_new_tokens: int) -> HeldOutReward | None:
    """Greedy answers to `prompts`: the reward model's mean reward and their mean length; None for none."""
    if not prompts:
        return None
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens)
    rewards: list[float] = []
    lengths: list[int] = []
    for start in range(0, len(prompts), EVAL_BATCH):
        rows, ended = sample(model, models, encoded[start : start + EVAL_BATCH], 1, greedy)
        rewards += reward_model.score(list(prompts[start : start + EVAL_BATCH]), _texts(models, rows, ended))
        lengths += [len(r.completion_ids) for r in rows]
    return HeldOutReward(len(prompts), sum(rewards) / len(rewards), sum(lengths) / len(lengths))


class _Trainer:
    """One run's moving parts: the trainee, its optimizer, β, and (PPO) the value head."""

    def __init__(self, models: Models, trainee: PeftModel, cfg: RLHFConfig) -> None:
        self.models, self.trainee, self.cfg = models, trainee, cfg
        self.device, self.pad_id = models.device, models.tokenizer.pad_token_id
        self.beta = cfg.beta
        self.value_head: torch.nn.Linear | None = None
        self.params = list(adapter_params(trainee).values())
        if cfg.method == "ppo":
            hidden = trainee.get_base_model().config.hidden_size
            self.value_head = torch.nn.Linear(hidden, 1, device=self.device, dtype=torch.float32)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)
            self.params += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)
        self.rng = torch.Generator().manual_seed(cfg.seed)  # PPO's minibatch order

    def reference_logps(self, rows: Sequence[Encoded], width: int) -> torch.Tensor:
        with torch.no_grad(), reference_model(self.models, self.trainee) as ref:
            return token_stats(ref, rows, self.pad_id, self.device, width).logps

    def step(self, batch: Rollout) -> Metrics:
        """The method's update on one rollout; the step's metrics less the shared ones."""
        width = max(len(r.completion_ids) for r in batch.rows)
        ref = self.reference_logps(batch.rows, width)
        metrics = self._ppo(batch, ref, width) if self.cfg.method == "ppo" else self._group(batch, ref, width)
        if self.cfg.kl_target is not None:
            self.beta = adaptive_kl_beta(self.beta, metrics["kl"], self.cfg.kl_target, len(batch.rows),
                                         self.cfg.kl_horizon)
        return metrics

    def _group(self, batch: Rollout, ref: torch.Tensor, width: int) -> Metrics:
        stats = token_stats(self.trainee, batch.rows, self.pad_id, self.device, width, entropy=True)
        old, mask = stats.logps.detach(), stats.mask
        ref_logratio = (old - ref) * mask
        advantages = group_advantages(self.cfg, sequence_rewards(self.cfg, batch.scores, ref_logratio, mask,
                                                                 self.beta))
        loss, clipped = group_loss(self.cfg, stats.logps, old, ref, advantages, mask, self.beta)
        grad_norm = optimizer_step(self.optimizer, self.params, loss, self.cfg.max_grad_norm)
        assert stats.entropy is not None
        return {**self._rollout_metrics(batch, ref_logratio, mask), "loss": loss.item(), "policy_loss": loss.item(),
                "clip_fraction": float(clipped), "entropy": float(masked_mean(stats.entropy.detach(), mask)),
                "grad_norm": grad_norm}

    def _ppo(self, batch: Rollout, ref: torch.Tensor, width: int) -> Metrics:
        cfg, rows = self.cfg, batch.rows
        with torch.no_grad():
            old = token_stats(self.trainee, rows, self.pad_id, self.device, width, value_head=self.value_head)
        assert old.values is not None
        mask = old.mask
        advantages, returns = ppo_advantages(cfg, batch.scores, old.logps, ref, old.values, mask, self.beta)
        sums = dict.fromkeys(("loss", "policy_loss", "value_loss", "clip_fraction", "entropy", "grad_norm"), 0.0)
        updates = 0
        for _ in range(cfg.ppo_epochs):
            for mb in torch.randperm(len(rows), generator=self.rng).tensor_split(cfg.minibatches):
                idx = mb.tolist()
                now = token_stats(self.trainee, [rows[i] for i in idx], self.pad_id, self.device, width,
                                  entropy=True, value_head=self.value_head)
                assert now.values is not None and now.entropy is not None
                policy, value, clipped = ppo_loss(cfg, now.logps, now.values, old.logps[idx], old.values[idx],
                                                  advantages[idx], returns[idx], mask[idx])
                loss = policy + cfg.value_coef * value
                sums["grad_norm"] += optimizer_step(self.optimizer, self.params, loss, cfg.max_grad_norm)
                sums["loss"] += loss.item()
                sums["policy_loss"] += policy.item()
                sums["value_loss"] += value.item()
                sums["clip_fraction"] += float(clipped)
                sums["entropy"] += float(masked_mean(now.entropy.detach(), mask[idx]))
                updates += 1
        ref_logratio = (old.logps - ref) * mask
        return {**self._rollout_metrics(batch, ref_logratio, mask), **{k: v / updates for k, v in sums.items()}}

    def _rollout_metrics(self, batch: Rollout, ref_logratio: torch.Tensor, mask: torch.Tensor) -> Metrics:
        kl = float(ref_logratio.sum(-1).mean())
        reward = float(batch.scores.mean())
        return {"reward": reward, "reward_std": float(batch.scores.std()) if len(batch.rows) > 1 else 0.0,
                "kl": kl, "non_score_reward": -self.beta * kl, "objective": reward - self.beta * kl,
                "beta": self.beta, "response_length": float(mask.sum(-1).mean()),
                "ended": sum(batch.ended) / len(batch.ended)}


def split_prompts(prompts: Sequence[Prompt], cfg: RLHFConfig) -> tuple[list[int], list[int]]:
    """(train, held out) indices: a seeded random `heldout_count` held out (DPO's rule), order kept."""
    order = list(range(len(prompts)))
    random.Random(cfg.seed).shuffle(order)
    held = set(order[: heldout_count(len(prompts), cfg.heldout)])
    return [i for i in range(len(prompts)) if i not in held], sorted(held)


def prompts_sha256(prompts: Sequence[Prompt]) -> str:
    """sha256 over the prompts, one canonical JSON line each (as `pairs_sha256` hashes rows)."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(json.dumps(p, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def _encode_prompts(models: Models, prompts: Sequence[Prompt], cfg: RLHFConfig) -> list[tuple[int, ...]]:
    encoded = [tuple(prompt_ids(models, p)[0].tolist()) for p in prompts]
    long = [i + 1 for i, ids in enumerate(encoded) if len(ids) + cfg.max_new_tokens > cfg.max_length]
    if long:
        raise PlaygroundError(f"{len(long)} prompts (numbers {', '.join(map(str, long[:10]))}) leave no room for "
                              f"{cfg.max_new_tokens} new tokens within max length {cfg.max_length}")
    return encoded


def train_rlhf(models: Models, prompts: Sequence[Prompt], reward_model: RewardModel, cfg: RLHFConfig, out_dir: Path,
               callback: Callback | None = None, should_stop: Callable[[], bool] | None = None,
               reward_model_path: Path | None = None) -> RLHFResult:
    """Train the policy's LoRA adapter with `cfg.method` against `reward_model` on `prompts` (chat
    messages each); on success write a checkpoint under `out_dir` and publish it into
    `models.policy` (module docstring). `reward_model_path` is recorded as the reward model's id.

    `callback(step, total_steps, metrics)` runs after every step; `should_stop()` is asked before
    every step, and True ends the run with nothing written (`cancelled=True`). Any failure raises
    a `PlaygroundError`; the served policy is then exactly as before.
    """
    cfg.validate()
    started = time.perf_counter()
    check_policy(models, cfg.lora, "RLHF")
    if len(prompts) < MIN_PROMPTS:
        raise PlaygroundError("RLHF needs at least one prompt")
    encoded = _encode_prompts(models, prompts, cfg)
    train, held = split_prompts(prompts, cfg)
    schedule = batch_schedule([len(encoded[i]) for i in train], cfg.batch_size, cfg.steps, cfg.seed)
    history: list[Metrics] = []
    with models.lock:
        trainee = trainable_copy(models.policy.model)
    try:
        trainer, sampler = _Trainer(models, trainee, cfg), Sampler(trainee)
        held_prompts, held_ids = [prompts[i] for i in held], [encoded[i] for i in held]
        before = evaluate(sampler.policy(), models, reward_model, held_prompts, held_ids, cfg.max_new_tokens)
        cancelled = False
        for n, batch in enumerate(schedule):
            if should_stop is not None and should_stop():
                cancelled = True
                break
            step_started = time.perf_counter()
            chosen = [train[j] for j in batch]
            data = rollout(sampler.policy(), models, reward_model, [prompts[i] for i in chosen],
                           [encoded[i] for i in chosen], cfg.samples_per_prompt, cfg.sampling(cfg.seed * 1_000_003 + n))
            rollout_seconds = time.perf_counter() - step_started
            metrics = trainer.step(data)
            metrics.update({"learning_rate": cfg.lr, "samples": len(data.rows),
                            "tokens": sum(len(r.completion_ids) for r in data.rows),
                            "rollout_seconds": rollout_seconds, "seconds": time.perf_counter() - step_started})
            history.append(metrics)
            if callback is not None:
                callback(len(history), len(schedule), metrics)
        after = None if cancelled else evaluate(sampler.policy(), models, reward_model, held_prompts, held_ids,
                                                cfg.max_new_tokens)
    except Exception as exc:
        raise _abandoned(exc, len(history), len(schedule)) from exc
    result = RLHFResult(steps=history, total_steps=len(schedule), prompts=len(prompts), train_prompts=len(train),
                        heldout_prompts=len(held), heldout_before=before, heldout_after=after,
                        seconds=time.perf_counter() - started, cancelled=cancelled)
    if cancelled:
        return result
    try:
        record = _record(models, prompts, held, reward_model, reward_model_path, cfg, result)
        checkpoint = publish_trained(models, trainee, out_dir, record, prefix=cfg.method)
    except Exception as exc:
        raise _abandoned(exc, len(history), len(schedule)) from exc
    return replace(result, checkpoint=checkpoint, seconds=time.perf_counter() - started)


def _abandoned(exc: BaseException, done: int, total: int) -> PlaygroundError:
    return abandoned(exc, done, total, "RLHF", "the policy is unchanged and nothing was written")


def reward_model_id(reward_model: RewardModel, path: Path | None) -> dict[str, Any]:
    """What identifies the reward model in a record: its folder, the sha256 of its training pairs, when made."""
    return {"path": str(path) if path else None, "id": path.name if path else None,
            "pairs_sha256": (reward_model.record.get("pairs") or {}).get("sha256"),
            "created": reward_model.record.get("created"), "base": reward_model.base}


def _record(models: Models, prompts: Sequence[Prompt], held: list[int], reward_model: RewardModel,
            reward_model_path: Path | None, cfg: RLHFConfig, result: RLHFResult) -> dict[str, Any]:
    """`record.json`'s content (see `checkpoints`). `hyperparameters.loss` is the method, so tables
    that name a checkpoint's loss name it."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": "rlhf",
        "method": cfg.method,
        "parent": parent_record(models.policy.source),
        "base_model": {"source": models.sft.source, "ident": models.sft.ident},
        "reference": {"source": models.reference.source, "ident": models.reference.ident},
        "reward_model": reward_model_id(reward_model, reward_model_path),
        "prompts": {"sha256": prompts_sha256(prompts), "count": len(prompts), "train": result.train_prompts,
                    "heldout": result.heldout_prompts, "heldout_rows": held},
        "hyperparameters": {**asdict(cfg), "loss": cfg.method, "total_steps": result.total_steps},
        "steps": result.steps,
        "heldout_reward": {"before": result.heldout_before and asdict(result.heldout_before),
                           "after": result.heldout_after and asdict(result.heldout_after)},
        "seconds": result.seconds,
        "device": str(models.device),
        "dtype": str(models.dtype).removeprefix("torch."),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
