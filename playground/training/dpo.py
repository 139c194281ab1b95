"""DPO and its siblings on the policy's LoRA adapter: one update round from preference pairs (and,
for KTO, single judged completions) to a published policy.

Per pair (x, y_w, y_l), with log π(y|x) summed over completion tokens (TRL's tokenization, see
`encoding`) and r(x, y) = β·(log π_θ(y|x) − log π_ref(y|x)), the loss is one of (`objectives`):

- sigmoid: −log σ(r_w − r_l)                       (DPO, Rafailov et al. 2023)
- robust:  [−(1−ε)·log σ(Δ) + ε·log σ(−Δ)] / (1−2ε), Δ = r_w − r_l   (labels flipped w.p. ε)
- hinge:   max(0, 1 − (r_w − r_l))
- ipo:     (h − 1/(2β))², h = per-token mean log-ratio of y_w minus that of y_l
- simpo:   −log σ(β/|y_w|·log π_θ(y_w) − β/|y_l|·log π_θ(y_l) − γ)   (reference-free)
- orpo:    L_SFT + λ·(−log σ(log odds(y_w) − log odds(y_l))), odds from the mean per-token
           log-prob, L_SFT the per-token NLL of prompt + chosen over the step (reference-free; TRL's
           experimental ORPOTrainer, whose NLL also covers the prompt tokens: a second, prompt-only
           forward pays for them, as the pair row only projects completion positions)
- kto:     per completion λ_D·(1 − σ(β·(ρ − z₀))) if desirable, λ_U·(1 − σ(β·(z₀ − ρ))) if not,
           ρ = log π_θ/π_ref, z₀ = max(0, the step's mean log-ratio of mismatched pairs), detached

averaged over the pairs (KTO: completions) of a step; AdamW on the adapter's weights only, constant
learning rate, gradients clipped to `max_grad_norm` (TRL's default 1.0), no dropout (TRL disables it too).

KTO trains on completions, not pairs: every training pair gives its chosen answer as desirable and
its rejected answer as undesirable, and `unpaired` rows (a 👍/👎 on one answer, both sides of *Both
bad*) join as labelled. Each completion is tokenized alone (TRL's KTOTrainer does). Within a step
the completions are rotated by one, prompt i paired with completion i−1 (TRL's rotation), to
estimate z₀; both sit in one tree row (`pairs`), the mismatched completion in the "rejected" branch.
A step of KTO has at least two completions (a trailing single one joins the batch before it).
Held-out pairs stay pairs for every loss.

Reference-free losses (simpo, orpo) skip the reference pass over the training pairs; the held-out
pairs still get one, so held-out implicit-reward accuracy and margin (and the record) stay
comparable with DPO's. Every run also reports the held-out log-prob margin log π_θ(y_w) − log π_θ(y_l)
(`heldout_logps_*`), the direct measure for a reference-free loss.

Speed. Reference log-probs are computed once per pair, in batched no-grad passes, before the
first step (TRL's `precompute_ref_log_probs`). A step is one forward over its pairs, one row per
pair holding prompt, chosen and rejected under a tree attention mask (`pairs`): the prompt is
computed once, no completion is padded to the other's length, and only completion positions go
through the vocabulary projection. Pairs are bucketed by length: each epoch is shuffled, cut into
windows of `BUCKET_WINDOW` batches, each window sorted by length and cut into batches, and the
batch order shuffled again, so a batch pads little.

Safety: train a copy, publish at the end (`trainee`): the served policy changes only when a run
finishes, all at once; a failed or cancelled run leaves it bit-identical and writes nothing.

Per-step metrics, named as TRL logs them (means over the step's pairs):
  loss                 the objective above
  rewards/chosen       r(x, y_w) = β·(log π_θ − log π_ref)(y_w); reference-free losses log their
                       own reward, as TRL: simpo β·log π_θ(y_w)/|y_w|, orpo λ·log π_θ(y_w)/|y_w|
  rewards/rejected     r(x, y_l)
  rewards/accuracies   fraction of pairs with r_w > r_l; ties count ½ (TRL counts ties as wrong,
                       so a fresh adapter, where every reward is 0, shows 0 there and 0.5 here)
  rewards/margins      r_w − r_l
  logps/chosen         log π_θ(y_w|x), summed over tokens (TRL's ORPO/CPO log the per-token mean)
  logps/rejected       log π_θ(y_l|x)
  nll_loss, log_odds_ratio, log_odds_chosen   orpo only: L_SFT, mean log σ(log odds ratio), mean log odds ratio
  kto:                 kl (z₀), desirable and undesirable (completions in the step); rewards/chosen,
                       logps/chosen over the desirable ones, rewards/rejected, logps/rejected over the
                       undesirable ones, each only when the step has some, rewards/margins only when it
                       has both (as TRL; no accuracy, there are no pairs)
  grad_norm            L2 norm of the adapter's gradient before clipping
  learning_rate, epoch (rows seen / training rows), seconds (wall time of the step), pairs (rows
                       in the step: pairs, or for KTO completions)
"""

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
import torch.nn.functional as F
import transformers
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from playground.core.beta import BETA_RULE, DEFAULT_BETA, beta_ok
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_SEQUENCE_TOKENS, MAX_TRAIN_EPOCHS, MAX_TRAIN_STEPS
from playground.data.rows import PreferenceRow, UnpairedRow, unpair
from playground.models.checkpoints import HeldOut, pairs_sha256, publish_trained, read_record
from playground.models.roles import LoraSettings, Models, adapter_params
from playground.objectives import (
    dpo_loss,
    hinge_loss,
    implicit_reward,
    ipo_loss,
    kto_loss,
    kto_reference_point,
    log_odds_ratio,
    orpo_loss,
    reward_accuracy,
    robust_dpo_loss,
    simpo_loss,
)
from playground.scoring.encoding import Encoded, encode, truncate
from playground.scoring.pairs import EncodedPair, all_pair_logps, encode_pairs, pair_logps
from playground.scoring.scorer import completion_token_logps, length_sorted_batches
from playground.training.loop import Callback, Metrics, abandoned, run_steps
from playground.training.trainee import check_policy, reference_model, trainable_copy

LOSSES = ("sigmoid", "ipo", "hinge", "robust", "kto", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")  # trained without the reference model
DEFAULT_EPOCHS = 3.0  # TrainingArguments' num_train_epochs, so a TRL user gets the same run length
MIN_PAIRS = 2
MIN_PAIRS_FOR_HELDOUT = 5
BUCKET_WINDOW = 8


def loss_label(loss: str) -> str:
    """A loss as the tables name it: reference-free ones say so (their held-out reward columns still
    use the reference, measured after training)."""
    return f"{loss} (reference-free)" if loss in REFERENCE_FREE else loss


@dataclass(frozen=True)
class DPOConfig:
    """One training run's settings; `validate()` before use. β scales r = β·log(π_θ/π_ref) (for IPO
    it is the regulariser τ: the target margin is 1/(2β); for SimPO it scales the per-token mean
    log-prob, its paper uses β ≈ 2); ε is robust DPO's label-flip rate. The loss-specific settings
    default to TRL's and may differ from the default only with their loss."""

    beta: float = DEFAULT_BETA
    lr: float = 5e-4  # LoRA-sized; TRL's 1e-6 default is for full fine-tuning
    steps: int | None = None  # give steps or epochs, not both; neither: DEFAULT_EPOCHS
    epochs: float | None = None
    batch_size: int = 4  # pairs per step
    lora: LoraSettings = field(default_factory=LoraSettings)  # must describe the policy's adapter (checked)
    max_length: int = MAX_SEQUENCE_TOKENS  # tokens per prompt+completion row; longer rows are truncated
    seed: int = 0  # shuffling and the held-out split
    loss: str = "sigmoid"
    label_smoothing: float = 0.0  # ε, robust loss only
    heldout: float = 0.2  # fraction of pairs held out (none below MIN_PAIRS_FOR_HELDOUT pairs)
    max_grad_norm: float = 1.0
    simpo_gamma: float = 0.5  # γ, SimPO's target margin (TRL's CPOConfig default); simpo only
    orpo_lambda: float = 0.1  # λ on ORPO's odds-ratio term (TRL's ORPOConfig beta); orpo only
    kto_desirable_weight: float = 1.0  # λ_D; kto only
    kto_undesirable_weight: float = 1.0  # λ_U; kto only

    @property
    def reference_free(self) -> bool:
        return self.loss in REFERENCE_FREE

    def validate(self) -> "DPOConfig":
        """Raise a `PlaygroundError` listing every bad setting; return self."""
        checks = [
            (beta_ok(self.beta), BETA_RULE),
            (math.isfinite(self.lr) and self.lr > 0, "learning rate must be > 0"),
            (self.steps is None or self.epochs is None, "give steps or epochs, not both"),
            (self.steps is None or (isinstance(self.steps, int) and 1 <= self.steps <= MAX_TRAIN_STEPS),
             f"steps must be 1..{MAX_TRAIN_STEPS}"),
            (self.epochs is None or (math.isfinite(self.epochs) and 0 < self.epochs <= MAX_TRAIN_EPOCHS),
             f"epochs must be in (0, {MAX_TRAIN_EPOCHS:g}]"),
            (self.batch_size >= 1, "batch size must be ≥ 1"),
            (self.max_length >= 8, "max length must be ≥ 8 tokens"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
            (0 <= self.label_smoothing < 0.5, "label smoothing ε must be in [0, 0.5)"),
            (self.label_smoothing == 0 or self.loss == "robust", "label smoothing applies to the robust loss only"),
            (math.isfinite(self.simpo_gamma) and self.simpo_gamma >= 0, "SimPO gamma must be ≥ 0"),
            (self.simpo_gamma == DPOConfig.simpo_gamma or self.loss == "simpo",
             "SimPO gamma applies to the simpo loss only"),
            (math.isfinite(self.orpo_lambda) and self.orpo_lambda > 0, "ORPO lambda must be > 0"),
            (self.orpo_lambda == DPOConfig.orpo_lambda or self.loss == "orpo",
             "ORPO lambda applies to the orpo loss only"),
            (all(math.isfinite(w) and w > 0 for w in (self.kto_desirable_weight, self.kto_undesirable_weight)),
             "KTO desirable and undesirable weights must be > 0"),
            ((self.kto_desirable_weight, self.kto_undesirable_weight)
             == (DPOConfig.kto_desirable_weight, DPOConfig.kto_undesirable_weight) or self.loss == "kto",
             "KTO weights apply to the kto loss only"),
            (self.loss != "kto" or self.batch_size >= 2,
             "KTO needs a batch size ≥ 2 (its reference point comes from mismatched pairs within a step)"),
            (0 <= self.heldout < 1, "held-out fraction must be in [0, 1)"),
            (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0, "max grad norm must be > 0"),
            (self.lora.r >= 1 and self.lora.alpha > 0, "LoRA r must be ≥ 1 and alpha > 0"),
            (len(self.lora.targets) > 0, "LoRA needs at least one target module"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise PlaygroundError("; ".join(problems))
        return self

    def total_steps(self, n_train: int) -> int:
        """`steps`, or ⌈epochs · ⌈n_train / batch_size⌉⌉."""
        if self.steps is not None:
            return self.steps
        epochs = DEFAULT_EPOCHS if self.epochs is None else self.epochs
        return max(1, math.ceil(epochs * math.ceil(n_train / self.batch_size)))


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What a training run did: DPO here, the reward model (`reward_model`) the same way."""

    steps: list[Metrics]  # one entry per step taken
    total_steps: int
    pairs: int  # usable pairs: train + held out
    train_pairs: int
    heldout_pairs: int
    skipped: int  # rows whose chosen and rejected tokenize the same, or to nothing
    truncated: int  # usable pairs with a row cut to max_length
    heldout_before: HeldOut | None  # None when nothing was held out
    heldout_after: HeldOut | None
    seconds: float  # end to end: tokenization, reference pass, steps, evaluation, checkpoint
    cancelled: bool = False

    @property
    def pairs_seen(self) -> int:
        return sum(int(m["pairs"]) for m in self.steps)

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_seen / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, kw_only=True)
class TrainResult(RunResult):
    checkpoint: Path | None  # None when cancelled
    # The held-out pairs' log-prob margin under the policy alone: accuracy = share of pairs with
    # log π_θ(y_w) > log π_θ(y_l) (ties ½), margin = mean log π_θ(y_w) − log π_θ(y_l), summed over tokens.
    heldout_logps_before: HeldOut | None = None
    heldout_logps_after: HeldOut | None = None
    unpaired: int = 0  # KTO: the extra unpaired rows trained on (beside the training pairs' two answers)
    reference_free: bool = False  # trained without the reference (simpo, orpo)


@dataclass(frozen=True)
class EncodedCompletion:
    """One judged completion for KTO, token ids uncut (a mismatched pair puts them under another
    prompt, and cuts that row to `max_length` itself)."""

    row: int  # index into the run's completions (the training pairs' answers, then `unpaired`)
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    desirable: bool

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def heldout_count(n: int, fraction: float) -> int:
    """round(fraction·n), at least 1, leaving ≥ MIN_PAIRS to train on; 0 below MIN_PAIRS_FOR_HELDOUT."""
    if n < MIN_PAIRS_FOR_HELDOUT or fraction <= 0:
        return 0
    return min(max(1, round(fraction * n)), n - MIN_PAIRS)


def pair_losses(cfg: DPOConfig, logps: torch.Tensor, ref_logps: torch.Tensor | None, n_tokens: torch.Tensor
                ) -> torch.Tensor:
    """Per-pair loss (B,) from policy and reference log-probs and completion lengths, each (B, 2)
    with column 0 the chosen and column 1 the rejected completion. `ref_logps` is None for simpo."""
    if cfg.loss == "simpo":
        return simpo_loss(logps[:, 0], logps[:, 1], n_tokens[:, 0], n_tokens[:, 1], cfg.beta, cfg.simpo_gamma)
    if ref_logps is None:
        raise PlaygroundError(f"the {cfg.loss} loss needs reference log-probs")
    if cfg.loss == "ipo":
        ratio = logps - ref_logps
        return ipo_loss(ratio[:, 0], ratio[:, 1], n_tokens[:, 0], n_tokens[:, 1], cfg.beta)
    rewards = implicit_reward(logps, ref_logps, cfg.beta)
    if cfg.loss == "robust":
        return robust_dpo_loss(rewards[:, 0], rewards[:, 1], cfg.label_smoothing)
    if cfg.loss == "hinge":
        return hinge_loss(rewards[:, 0], rewards[:, 1])
    return dpo_loss(rewards[:, 0], rewards[:, 1])


def margin_metrics(scores: torch.Tensor) -> HeldOut:
    """Accuracy and mean margin of per-pair scores (N, 2), column 0 the chosen answer's."""
    margins = scores[:, 0] - scores[:, 1]
    return HeldOut(len(margins), reward_accuracy(margins), float(margins.mean()))


def heldout_metrics(logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> HeldOut:
    return margin_metrics(implicit_reward(logps, ref_logps, beta))


def batch_schedule(lengths: Sequence[int], batch_size: int, steps: int, seed: int, min_batch: int = 1
                   ) -> list[list[int]]:
    """`steps` batches of indices: epochs of shuffled, length-bucketed batches (module docstring);
    a batch smaller than `min_batch` joins the one before it."""
    rng = random.Random(seed)
    window = batch_size * BUCKET_WINDOW
    schedule: list[list[int]] = []
    while len(schedule) < steps:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        epoch: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            for b in length_sorted_batches([lengths[i] for i in chunk], batch_size):
                if len(b) < min_batch and epoch:
                    epoch[-1] += [chunk[j] for j in b]
                else:
                    epoch.append([chunk[j] for j in b])
        rng.shuffle(epoch)
        schedule += epoch
    return schedule[:steps]


def split_pairs(pairs: Sequence[EncodedPair], cfg: DPOConfig) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """(train, held out): a seeded random `heldout_count` of the pairs held out, input order kept."""
    order = list(range(len(pairs)))
    random.Random(cfg.seed).shuffle(order)
    held = set(order[: heldout_count(len(pairs), cfg.heldout)])
    return ([p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held])


def _pair_metrics(loss: torch.Tensor, rewards: torch.Tensor, logps: torch.Tensor) -> Metrics:
    margins = rewards[:, 0] - rewards[:, 1]
    return {
        "loss": loss.item(),
        "rewards/chosen": float(rewards[:, 0].mean()),
        "rewards/rejected": float(rewards[:, 1].mean()),
        "rewards/accuracies": reward_accuracy(margins),
        "rewards/margins": float(margins.mean()),
        "logps/chosen": float(logps[:, 0].mean()),
        "logps/rejected": float(logps[:, 1].mean()),
    }


def _prompt_nll_sums(model: torch.nn.Module, batch: Sequence[EncodedPair], pad_id: int, device: torch.device
                     ) -> tuple[torch.Tensor, int]:
    """(−Σ log-prob of the chosen rows' prompt tokens after the first, their count): what ORPO's
    L_SFT adds to the completion tokens (TRL's ORPO takes the NLL of the whole chosen sequence)."""
    rows = [Encoded(p.chosen.prompt_ids[:1], p.chosen.prompt_ids[1:]) for p in batch if len(p.chosen.prompt_ids) > 1]
    if not rows:
        return torch.zeros((), device=device), 0
    token_logps = completion_token_logps(model, rows, pad_id, device)
    return -torch.cat(token_logps).sum(), sum(len(t) for t in token_logps)


def pair_step(model: torch.nn.Module, batch: Sequence[EncodedPair], ref_logps: torch.Tensor | None,
              cfg: DPOConfig, pad_id: int, device: torch.device) -> tuple[torch.Tensor, Metrics]:
    """The mean loss over a step's pairs (in the graph) and the step's metrics (module docstring),
    for every loss but kto. `ref_logps` (B, 2) is None for a reference-free loss."""
    logps = pair_logps(model, batch, pad_id, device)
    n_tokens = torch.tensor([p.n_tokens for p in batch], dtype=torch.float32, device=device)
    if cfg.loss == "orpo":
        prompt_nll, prompt_tokens = _prompt_nll_sums(model, batch, pad_id, device)
        nll = (prompt_nll - logps[:, 0].sum()) / (prompt_tokens + n_tokens[:, 0].sum())
        means = logps / n_tokens
        loss = orpo_loss(nll, means[:, 0], means[:, 1], cfg.orpo_lambda)
        means = means.detach()
        odds = log_odds_ratio(means[:, 0], means[:, 1])
        metrics = _pair_metrics(loss, cfg.orpo_lambda * means, logps.detach())
        return loss, {**metrics, "nll_loss": nll.item(), "log_odds_ratio": float(F.logsigmoid(odds).mean()),
                      "log_odds_chosen": float(odds.mean())}
    loss = pair_losses(cfg, logps, ref_logps, n_tokens).mean()
    logps = logps.detach()
    if cfg.loss == "simpo":
        rewards = cfg.beta * logps / n_tokens
    else:
        assert ref_logps is not None  # pair_losses has refused a missing reference
        rewards = implicit_reward(logps, ref_logps, cfg.beta)
    return loss, _pair_metrics(loss, rewards, logps)


def kto_pairs(rows: Sequence[EncodedCompletion], max_length: int) -> list[EncodedPair]:
    """One tree row per completion of a step: (x_i, y_i) in the chosen branch and the mismatched
    (x_i, y_{i−1}) in the rejected one, y_{−1} the step's last completion (TRL's rotation)."""
    return [EncodedPair(r.row, truncate(r.prompt_ids, r.completion_ids, max_length),
                        truncate(r.prompt_ids, rows[i - 1].completion_ids, max_length))
            for i, r in enumerate(rows)]


def kto_step(model: torch.nn.Module, rows: Sequence[EncodedCompletion], ref_logps: torch.Tensor, cfg: DPOConfig,
             pad_id: int, device: torch.device) -> tuple[torch.Tensor, Metrics]:
    """KTO's mean loss over a step's completions and its metrics; `ref_logps` (B, 2) is the
    reference's `pair_logps` of `kto_pairs(rows)`: matched, mismatched."""
    logps = pair_logps(model, kto_pairs(rows, cfg.max_length), pad_id, device)
    ratio = logps - ref_logps
    z0 = kto_reference_point(ratio[:, 1])
    desirable = torch.tensor([r.desirable for r in rows], device=device)
    loss = kto_loss(ratio[:, 0], desirable, z0, cfg.beta, cfg.kto_desirable_weight,
                    cfg.kto_undesirable_weight).mean()
    rewards, logps = cfg.beta * ratio[:, 0].detach(), logps[:, 0].detach()
    n_desirable = int(desirable.sum())
    metrics: Metrics = {"loss": loss.item(), "kl": float(z0), "desirable": n_desirable,
                        "undesirable": len(rows) - n_desirable}
    for side, mask in (("chosen", desirable), ("rejected", ~desirable)):
        if mask.any():
            metrics[f"rewards/{side}"] = float(rewards[mask].mean())
            metrics[f"logps/{side}"] = float(logps[mask].mean())
    if "rewards/chosen" in metrics and "rewards/rejected" in metrics:
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return loss, metrics


def _optimize(models: Models, trainee: PeftModel, train: Sequence[EncodedPair] | Sequence[EncodedCompletion],
              heldout: list[EncodedPair], cfg: DPOConfig, total: int, history: list[Metrics],
              callback: Callback | None, should_stop: Callable[[], bool] | None
              ) -> tuple[tuple[HeldOut, HeldOut] | None, tuple[HeldOut, HeldOut] | None] | None:
    """Reference pass, held-out metrics before, the steps (appended to `history`), held-out
    metrics after: ((implicit reward before, after), (log-prob margin before, after)), each None
    without held-out pairs. None when `should_stop` said so between two steps. `train` holds
    completions for kto, pairs otherwise."""
    pad_id, device = models.tokenizer.pad_token_id, models.device
    kto = cfg.loss == "kto"
    schedule = batch_schedule([r.length for r in train], cfg.batch_size, total, cfg.seed, min_batch=2 if kto else 1)
    batches = [[train[i] for i in batch] for batch in schedule]
    with reference_model(models, trainee) as ref_model:
        if cfg.reference_free:
            ref_steps: list[torch.Tensor | None] = [None] * len(batches)
        elif kto:  # the mismatched pairs depend on the whole step, so the reference scores each step's rows
            step_pairs = [kto_pairs(rows, cfg.max_length) for rows in batches]
            flat = all_pair_logps(ref_model, [p for pairs in step_pairs for p in pairs], cfg.batch_size, pad_id, device)
            ref_steps = list(flat.split([len(pairs) for pairs in step_pairs]))
        else:
            ref_train = all_pair_logps(ref_model, train, cfg.batch_size, pad_id, device)
            ref_steps = [ref_train[batch] for batch in schedule]
        # Batched exactly as `evaluate` batches the policy, so a fresh adapter gives exact ties.
        ref_held = all_pair_logps(ref_model, heldout, cfg.batch_size, pad_id, device)

    def evaluate() -> tuple[HeldOut, HeldOut] | None:
        if not heldout:
            return None
        logps = all_pair_logps(trainee, heldout, cfg.batch_size, pad_id, device)
        return heldout_metrics(logps, ref_held, cfg.beta), margin_metrics(logps)

    step = kto_step if kto else pair_step
    steps = iter(zip(batches, ref_steps, strict=True))  # run_steps calls `forward` once per batch, in order
    before = evaluate()
    finished = run_steps(
        adapter_params(trainee).values(), schedule,
        lambda _batch: step(trainee, *next(steps), cfg, pad_id, device),
        lr=cfg.lr, max_grad_norm=cfg.max_grad_norm, n_train=len(train), history=history, callback=callback,
        should_stop=should_stop)
    return (before, evaluate()) if finished else None


def encode_completions(tokenizer: PreTrainedTokenizerBase, rows: Sequence[UnpairedRow]
                       ) -> tuple[list[EncodedCompletion], int]:
    """KTO's usable completions (uncut, each tokenized alone as TRL's KTOTrainer does) and the
    number skipped because the completion tokenizes to nothing."""
    usable = []
    for i, row in enumerate(rows):
        enc = encode(tokenizer, row.prompt, [row.completion], None)[0]
        if enc.completion_ids:
            usable.append(EncodedCompletion(i, enc.prompt_ids, enc.completion_ids, row.label))
    return usable, len(rows) - len(usable)


def parent_record(policy_source: str) -> dict[str, Any] | None:
    """The checkpoint the policy was loaded from, if it was loaded from an adapter folder."""
    folder = Path(policy_source)
    if not (folder / "adapter_config.json").is_file():
        return None
    record = read_record(folder)
    return {"path": str(folder), "id": record.get("id") if record else None}


def _abandoned(exc: BaseException, done: int, total: int) -> PlaygroundError:
    return abandoned(exc, done, total, "training", "the policy is unchanged and nothing was written")


def train_dpo(models: Models, pairs: Sequence[PreferenceRow], cfg: DPOConfig, out_dir: Path,
              callback: Callback | None = None, should_stop: Callable[[], bool] | None = None,
              unpaired: Sequence[UnpairedRow] = ()) -> TrainResult:
    """Train the policy's LoRA adapter with `cfg.loss` on `pairs` (KTO: their answers, plus the
    `unpaired` rows); on success write a checkpoint under `out_dir` and publish the new weights into
    `models.policy` (see the module docstring).

    `callback(step, total_steps, metrics)` runs after every step; `should_stop()` is asked before
    every step, and a True answer ends the run with nothing written (`cancelled=True`). Any
    failure raises a `PlaygroundError`; the served policy is then exactly as before.
    """
    cfg.validate()
    if unpaired and cfg.loss != "kto":
        raise PlaygroundError(f"{len(unpaired)} unpaired rows (a completion and a label, no pair) train only with "
                              f"the kto loss, not {cfg.loss}")
    started = time.perf_counter()
    check_policy(models, cfg.lora)
    encoded, skipped = encode_pairs(models.tokenizer, pairs, cfg.max_length)
    train_pairs, heldout = split_pairs(encoded, cfg)
    train: Sequence[EncodedPair] | Sequence[EncodedCompletion] = train_pairs
    truncated = sum(p.chosen.truncated or p.rejected.truncated for p in encoded)
    if cfg.loss == "kto":
        completions, skipped_completions = encode_completions(
            models.tokenizer, [*unpair([pairs[p.row] for p in train_pairs]), *unpaired])
        train, skipped = completions, skipped + skipped_completions
        truncated = sum(r.length > cfg.max_length for r in completions) + sum(
            p.chosen.truncated or p.rejected.truncated for p in heldout)
        if len(train) < MIN_PAIRS:
            raise PlaygroundError(f"KTO needs at least {MIN_PAIRS} usable completions, got {len(train)} (from "
                                  f"{len(train_pairs)} training pairs and {len(unpaired)} unpaired rows)")
    elif len(encoded) < MIN_PAIRS:
        raise PlaygroundError(
            f"{cfg.loss} needs at least {MIN_PAIRS} usable pairs, got {len(encoded)} of {len(pairs)}"
            + (f" ({skipped} skipped: chosen and rejected tokenize the same, or to nothing)" if skipped else "")
        )
    total = cfg.total_steps(len(train))
    history: list[Metrics] = []
    with models.lock:
        trainee = trainable_copy(models.policy.model)
    try:
        outcome = _optimize(models, trainee, train, heldout, cfg, total, history, callback, should_stop)
    except Exception as exc:
        raise _abandoned(exc, len(history), total) from exc
    rewards, logps = outcome if outcome else (None, None)
    result = TrainResult(
        checkpoint=None, steps=history, total_steps=total, pairs=len(encoded), train_pairs=len(train_pairs),
        heldout_pairs=len(heldout), skipped=skipped, truncated=truncated,
        heldout_before=rewards[0] if rewards else None, heldout_after=rewards[1] if rewards else None,
        heldout_logps_before=logps[0] if logps else None, heldout_logps_after=logps[1] if logps else None,
        unpaired=len(unpaired), reference_free=cfg.reference_free,
        seconds=time.perf_counter() - started, cancelled=outcome is None,
    )
    if result.cancelled:
        return result
    try:
        record = run_record(models, [pairs[p.row] for p in encoded], [p.row for p in heldout], list(unpaired), cfg,
                         result)
        checkpoint = publish_trained(models, trainee, out_dir, record)  # see the module docstring
    except Exception as exc:
        raise _abandoned(exc, len(history), total) from exc
    return replace(result, checkpoint=checkpoint, seconds=time.perf_counter() - started)


def run_record(models: Models, used: list[PreferenceRow], heldout_rows: list[int], unpaired: list[UnpairedRow],
            cfg: DPOConfig, result: TrainResult) -> dict[str, Any]:
    """`record.json`'s content (see `checkpoints`)."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "parent": parent_record(models.policy.source),
        "base_model": {"source": models.sft.source, "ident": models.sft.ident},
        "reference": {"source": models.reference.source, "ident": models.reference.ident},
        "pairs": {"sha256": pairs_sha256(used), "count": len(used), "train": result.train_pairs,
                  "heldout": result.heldout_pairs, "heldout_rows": heldout_rows, "skipped": result.skipped,
                  "truncated": result.truncated},
        # The same hash over the rows as TRL reads them (prompt, completion, label); KTO only.
        "unpaired": {"sha256": pairs_sha256(unpaired), "count": len(unpaired)},
        "hyperparameters": {**asdict(cfg), "total_steps": result.total_steps},
        "reference_free": result.reference_free,
        "steps": result.steps,
        "heldout": {"before": result.heldout_before and asdict(result.heldout_before),
                    "after": result.heldout_after and asdict(result.heldout_after)},
        "heldout_logps": {"before": result.heldout_logps_before and asdict(result.heldout_logps_before),
                          "after": result.heldout_logps_after and asdict(result.heldout_logps_after)},
        "seconds": result.seconds,
        "device": str(models.device),
        "dtype": str(models.dtype).removeprefix("torch."),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
    }
