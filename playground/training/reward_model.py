"""A Bradley–Terry reward model r_ϑ(x, y), RLHF's first half, trained on the same preference pairs as DPO.

Model. The SFT model's transformer (its decoder, without the LM head) with a LoRA adapter, and a
scalar head on top:

    r_ϑ(x, y) = w · h_last(x, y) + b,    w ∈ ℝ^H, b ∈ ℝ,

h_last the decoder's final (normed) hidden state at the last token of prompt + completion. Rows
are tokenized exactly as the scorer and TRL's trainers do it (`encoding`): for chat rows the
completion ends with the template's end-of-turn tokens (`<|im_end|>\\n` for SmolLM2), for plain
text with EOS, so h_last is the state after the whole answer has been read.

Pooling. Each distinct prompt is computed once for its rows (a pair's chosen and rejected; K samples
in RLHF: `shared_prompt`), completions right-padded, and the pooled position is each row's own last
token, known from its token count, never guessed from the pad id. transformers'
`LlamaForSequenceClassification` pools at the rightmost token that is not `pad_token_id` and ignores
the attention mask; SmolLM2's pad token is its EOS `<|im_end|>`, so for plain-text rows (…, EOS) it
pools at the token *before* EOS (checked with transformers 5.23; chat rows end in `\\n` and come out
right by luck). That is why this is a linear head on the decoder rather than
AutoModelForSequenceClassification. The head and the reward are float32 whatever the decoder's dtype.

Loss. Per pair (x, y⁺, y⁻) the Bradley–Terry negative log-likelihood
ℓ_RM = −log σ(r_ϑ(x, y⁺) − r_ϑ(x, y⁻)), which is `objectives.dpo_loss` with r_ϑ in place of the
implicit reward (its docstring says so), averaged over a step's pairs. AdamW on the LoRA weights
and the head, constant learning rate, gradient clipped to `max_grad_norm`, no dropout (as in DPO).
The bias b cancels in every difference r⁺ − r⁻, so it gets no gradient and stays 0: rewards are
defined up to a constant, as in any Bradley–Terry model.

Start. w = 0, b = 0 and LoRA's B = 0, so an untrained model gives every response r = 0: every
pair gets p = σ(0) = ½ and held-out accuracy is exactly 0.5 (ties count ½). The LoRA A matrices
are drawn with torch's RNG seeded with `seed` (the caller's RNG state is restored), so a run is
reproducible.

Run length, held-out split and validation are DPO's own code (`RewardConfig.as_dpo`): the same
seed and fraction hold out the same pairs as a DPO run, so the two can be compared pair for pair.

Safety. Training loads its own copy of the base weights from the SFT location
(`Models.sft.source`); the served models are never touched and keep serving meanwhile. Training
writes nothing: `RewardModel.save` writes a new folder under a temporary name and renames it into
place. A NaN/inf loss or gradient, an exception or a cancel ends the run with no model.

Folder (`save`/`load_reward_model`):
  reward_model.safetensors   float32 tensors: the LoRA weights as `decoder.<peft name>` and the
                             head as `head.weight` (1, H), `head.bias` (1,)
  reward_config.json         format, the base model's location and shape, the settings, the sha256
                             of the pairs, per-step and held-out metrics
Only these two are read back, the weights with safetensors (no pickle).

Per-step metrics (means over the step's pairs): loss, accuracy (r⁺ > r⁻, ties ½), margin (r⁺ − r⁻),
rewards/chosen, rewards/rejected, grad_norm, learning_rate, pairs, epoch, seconds.
"""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import cast_adapter_dtype
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from playground.core.atomic import new_folder
from playground.core.chat import Text, is_conversational
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_SEQUENCE_TOKENS
from playground.data.rows import PreferenceRow
from playground.models.checkpoints import HeldOut, pairs_sha256
from playground.models.devices import resolve_device, resolve_dtype
from playground.models.roles import POLICY_ADAPTER, LoraSettings, load_causal_lm
from playground.objectives import dpo_loss, reward_accuracy
from playground.scoring.encoding import Encoded, encode
from playground.scoring.pairs import EncodedPair, encode_pairs
from playground.scoring.scorer import length_sorted_batches, prompt_sorted_batches
from playground.scoring.shared_prompt import last_token_hidden
from playground.training.dpo import MIN_PAIRS, DPOConfig, RunResult, batch_schedule, split_pairs
from playground.training.loop import Callback, Metrics, abandoned, run_steps

WEIGHTS = "reward_model.safetensors"
RECORD = "reward_config.json"
RECORD_FORMAT = 1
KIND = "bradley-terry-reward-model"
DECODER_PREFIX, HEAD_PREFIX = "decoder.", "head."


@dataclass(frozen=True)
class RewardConfig:
    """One reward-model run's settings; `validate()` before use. Every field means what the DPO
    field of the same name means (`DPOConfig`)."""

    # DPO's LoRA-sized default. On the packaged SmolLM2-135M and docs/examples/short-answers.jsonl,
    # 15 steps of 4 pairs: 1e-4 takes the loss from 0.69 to 0.43, 5e-4 to 0.001 (held-out margin +7),
    # 1e-3 saturates by step 9, 5e-3 oscillates.
    lr: float = 5e-4
    steps: int | None = None  # give steps or epochs, not both; neither: 3 epochs (DPO's default)
    epochs: float | None = None
    batch_size: int = 4  # pairs per step (two rows each)
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_length: int = MAX_SEQUENCE_TOKENS  # tokens per prompt+completion row; longer rows are truncated
    seed: int = 0  # LoRA initialisation, shuffling and the held-out split
    heldout: float = 0.2  # fraction of pairs held out (none below 5 pairs)
    max_grad_norm: float = 1.0

    def as_dpo(self) -> DPOConfig:
        """The DPO settings with the same meaning, so validation, the step count and the held-out
        split are DPO's own code (and a DPO run with this seed holds out the same pairs)."""
        return DPOConfig(lr=self.lr, steps=self.steps, epochs=self.epochs, batch_size=self.batch_size,
                         lora=self.lora, max_length=self.max_length, seed=self.seed, heldout=self.heldout,
                         max_grad_norm=self.max_grad_norm)

    def validate(self) -> "RewardConfig":
        """Raise a `PlaygroundError` listing every bad setting; return self."""
        self.as_dpo().validate()  # the DPO-only settings (β, loss, ε) are at their valid defaults
        return self

    def total_steps(self, n_train: int) -> int:
        """`steps`, or ⌈epochs · ⌈n_train / batch_size⌉⌉."""
        return self.as_dpo().total_steps(n_train)


def last_token_rewards(decoder: torch.nn.Module, head: torch.nn.Linear, rows: Sequence[Encoded], pad_id: int,
                       device: torch.device) -> torch.Tensor:
    """r = w·h_last + b for each row (B,), float32, kept in the autograd graph when grad is enabled.
    h_last is read at each row's own last token, known from its length (`shared_prompt.last_token_hidden`:
    each distinct prompt computed once, completions right-padded), so neither the pad id nor the
    padding can move it (module docstring)."""
    return head(last_token_hidden(decoder, rows, pad_id, device).float()).squeeze(-1)  # (B,)


def _as_completion(prompt: Text, response: Text) -> Text:
    """A plain reply to a chat prompt becomes the assistant turn that `encode` renders."""
    if is_conversational(prompt) and isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return response


class RewardModel:
    """A trained (or loaded) reward model: score responses, evaluate pairs, save.

    Independent of the served models (its own copy of the base weights), so it can score while
    they generate or train. `record` is what `save` writes to `reward_config.json`.
    """

    def __init__(self, decoder: torch.nn.Module, head: torch.nn.Linear, tokenizer: PreTrainedTokenizerBase,
                 config: RewardConfig, base: str, device: torch.device, record: dict[str, Any] | None = None
                 ) -> None:
        self.decoder = decoder
        self.head = head
        self.tokenizer = tokenizer
        self.config = config
        self.base = base  # where the base weights come from (an HF folder or hub id)
        self.device = device
        self.record: dict[str, Any] = record or {}
        # Any valid id pads: pooling never looks at padding (`last_token_rewards`).
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id: int = pad if pad is not None else 0

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The LoRA weights and the head."""
        return [p for p in self.decoder.parameters() if p.requires_grad] + list(self.head.parameters())

    def rewards(self, rows: Sequence[Encoded]) -> torch.Tensor:
        """(B,) rewards of encoded rows in one forward; grad flows if enabled."""
        return last_token_rewards(self.decoder, self.head, rows, self.pad_id, self.device)

    def pair_rewards(self, pairs: Sequence[EncodedPair]) -> torch.Tensor:
        """(B, 2) rewards, column 0 chosen and 1 rejected, in one forward of 2B rows."""
        rows = [row for p in pairs for row in (p.chosen, p.rejected)]
        return self.rewards(rows).view(len(pairs), 2)

    def all_pair_rewards(self, pairs: Sequence[EncodedPair]) -> torch.Tensor:
        """`pair_rewards` of every pair without grad, in length-sorted batches: (N, 2) on the device."""
        out = torch.zeros(len(pairs), 2, device=self.device)
        lengths = [max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in pairs]
        with torch.no_grad():
            for batch in length_sorted_batches(lengths, self.config.batch_size):
                out[batch] = self.pair_rewards([pairs[i] for i in batch])
        return out

    def evaluate_encoded(self, pairs: Sequence[EncodedPair]) -> HeldOut | None:
        """Accuracy (r⁺ > r⁻, ties ½) and mean margin r⁺ − r⁻ over `pairs`; None for no pairs."""
        if not pairs:
            return None
        rewards = self.all_pair_rewards(pairs)
        margins = rewards[:, 0] - rewards[:, 1]  # (N,)
        return HeldOut(len(pairs), reward_accuracy(margins), float(margins.mean()))

    def evaluate(self, pairs: Sequence[PreferenceRow]) -> HeldOut | None:
        """`evaluate_encoded` on preference rows (rows whose completions tokenize the same are left out)."""
        encoded, _ = encode_pairs(self.tokenizer, pairs, self.config.max_length)
        return self.evaluate_encoded(encoded)

    def score(self, prompts: Sequence[Text], responses: Sequence[Text], batch_size: int = 8) -> list[float]:
        """r_ϑ(x, y) for each (prompt, response): prompts are chat messages or plain text; a response
        is the assistant's reply (a string, or its message list). Batched by length, no grad; a
        response's score does not depend on what it is batched with."""
        if len(prompts) != len(responses):
            raise PlaygroundError(f"{len(prompts)} prompts but {len(responses)} responses")
        rows = [encode(self.tokenizer, p, [_as_completion(p, r)], self.config.max_length)[0]
                for p, r in zip(prompts, responses, strict=True)]
        out = [0.0] * len(rows)
        with torch.inference_mode():
            # Responses to one prompt share its encoding (`shared_prompt`): K rollout samples, k slots.
            for batch in prompt_sorted_batches(rows, batch_size):
                for i, value in zip(batch, self.rewards([rows[i] for i in batch]).tolist(), strict=True):
                    out[i] = value
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What `save` writes: LoRA and head weights, float32, on the CPU."""
        lora = get_peft_model_state_dict(self.decoder, adapter_name=POLICY_ADAPTER)
        tensors = {DECODER_PREFIX + k: v for k, v in lora.items()}
        tensors |= {HEAD_PREFIX + k: v for k, v in self.head.state_dict().items()}
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}

    def save(self, folder: Path | str) -> Path:
        """Write the model into the new folder `folder` (module docstring), atomically: built
        under a temporary name beside it and renamed into place, so a reader sees nothing or all
        of it. An existing `folder` is refused, never overwritten."""
        folder = Path(folder)
        with new_folder(folder, "a reward model") as tmp:
            save_file(self.state_dict(), str(tmp / WEIGHTS), metadata={"format": str(RECORD_FORMAT)})
            record = {"format": RECORD_FORMAT, "kind": KIND, **self.record}
            (tmp / RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            for path in (tmp / WEIGHTS, tmp / RECORD):  # safetensors writes 0600; readable like the folder
                path.chmod(0o644)
        return folder


def _build(base: str, tokenizer: PreTrainedTokenizerBase, config: RewardConfig, device: torch.device,
           dtype: torch.dtype) -> RewardModel:
    """A fresh reward model: base weights loaded from `base`, LoRA with B = 0 (A seeded), head 0."""
    decoder = load_causal_lm(base, "sft", device, dtype).base_model  # frozen; the LM head is not needed
    with torch.random.fork_rng(devices=[]):  # peft draws A on the CPU; keep the caller's RNG untouched
        torch.manual_seed(config.seed)
        decoder = inject_adapter_in_model(config.lora.peft_config(), decoder, adapter_name=POLICY_ADAPTER)
    # float32 LoRA weights, as get_peft_model gives them: in bfloat16, small AdamW updates round away.
    cast_adapter_dtype(decoder, POLICY_ADAPTER)
    head = torch.nn.Linear(decoder.config.hidden_size, 1, device=device, dtype=torch.float32)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    decoder.eval()  # no dropout, in training too
    return RewardModel(decoder, head, tokenizer, config, base, device)


@dataclass(frozen=True, kw_only=True)
class RewardTrainResult(RunResult):
    model: RewardModel | None  # None when cancelled; saving it is the caller's choice


def _forward(model: RewardModel, batch: Sequence[EncodedPair]) -> tuple[torch.Tensor, Metrics]:
    """The mean loss over `batch` (in the graph) and the step's metrics (module docstring)."""
    rewards = model.pair_rewards(batch)  # (B, 2)
    loss = dpo_loss(rewards[:, 0], rewards[:, 1]).mean()  # ℓ_RM = −log σ(r⁺ − r⁻), see the module docstring
    rewards = rewards.detach()
    margins = rewards[:, 0] - rewards[:, 1]  # (B,)
    return loss, {
        "loss": loss.item(),
        "accuracy": reward_accuracy(margins),
        "margin": float(margins.mean()),
        "rewards/chosen": float(rewards[:, 0].mean()),
        "rewards/rejected": float(rewards[:, 1].mean()),
    }


def train_reward_model(base: str | Path, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PreferenceRow],
                       cfg: RewardConfig, callback: Callback | None = None,
                       should_stop: Callable[[], bool] | None = None, device: str | torch.device = "auto",
                       dtype: str | torch.dtype = "auto") -> RewardTrainResult:
    """Train a fresh reward model on `pairs` (module docstring); nothing is written.

    `base`: the SFT weights as a folder or hub id (the app's `models.sft.source`), `tokenizer` the
    one that goes with them (`models.tokenizer`). `callback(step, total_steps, metrics)` runs after
    every step; `should_stop()` is asked before every step, and True ends the run with
    `cancelled=True` and no model. Any failure raises a `PlaygroundError`.
    """
    cfg.validate()
    started = time.perf_counter()
    device = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
    encoded, skipped = encode_pairs(tokenizer, pairs, cfg.max_length)
    if len(encoded) < MIN_PAIRS:
        raise PlaygroundError(
            f"a reward model needs at least {MIN_PAIRS} usable pairs, got {len(encoded)} of {len(pairs)}"
            + (f" ({skipped} skipped: chosen and rejected tokenize the same, or to nothing)" if skipped else "")
        )
    train, heldout = split_pairs(encoded, cfg.as_dpo())
    total = cfg.total_steps(len(train))
    truncated = sum(p.chosen.truncated or p.rejected.truncated for p in encoded)
    history: list[Metrics] = []
    model = _build(str(base), tokenizer, cfg, device, dtype)  # a bad base raises its own loading error
    try:
        before = model.evaluate_encoded(heldout)
        finished = run_steps(
            model.trainable_parameters(),
            batch_schedule([max(len(p.chosen.input_ids), len(p.rejected.input_ids)) for p in train],
                           cfg.batch_size, total, cfg.seed),
            lambda batch: _forward(model, [train[i] for i in batch]),
            lr=cfg.lr, max_grad_norm=cfg.max_grad_norm, n_train=len(train), history=history, callback=callback,
            should_stop=should_stop)
        if not finished:
            return RewardTrainResult(
                model=None, steps=history, total_steps=total, pairs=len(encoded), train_pairs=len(train),
                heldout_pairs=len(heldout), skipped=skipped, truncated=truncated, heldout_before=before,
                heldout_after=None, seconds=time.perf_counter() - started, cancelled=True)
        after = model.evaluate_encoded(heldout)
    except Exception as exc:
        raise abandoned(exc, len(history), total, "reward-model training", "nothing was written") from exc
    result = RewardTrainResult(
        model=model, steps=history, total_steps=total, pairs=len(encoded), train_pairs=len(train),
        heldout_pairs=len(heldout), skipped=skipped,
        truncated=truncated, heldout_before=before, heldout_after=after, seconds=time.perf_counter() - started,
    )
    model.record = _record(model, [pairs[p.row] for p in encoded], [p.row for p in heldout], result, dtype)
    return result


def _record(model: RewardModel, used: list[PreferenceRow], heldout_rows: list[int], result: RewardTrainResult,
            dtype: torch.dtype) -> dict[str, Any]:
    """`reward_config.json`'s content, less `format` and `kind` (module docstring)."""
    cfg = model.decoder.config
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": {"source": model.base, **_shape(cfg)},
        "config": asdict(model.config),
        "pairs": {"sha256": pairs_sha256(used), "count": len(used), "train": result.train_pairs,
                  "heldout": result.heldout_pairs, "heldout_rows": heldout_rows, "skipped": result.skipped,
                  "truncated": result.truncated},
        "heldout": {"before": result.heldout_before and asdict(result.heldout_before),
                    "after": result.heldout_after and asdict(result.heldout_after)},
        "steps": result.steps,
        "total_steps": result.total_steps,
        "seconds": result.seconds,
        "device": str(model.device),
        "dtype": str(dtype).removeprefix("torch."),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }


def _shape(cfg: transformers.PretrainedConfig) -> dict[str, Any]:
    """What a base model must match for saved weights to mean the same thing."""
    return {k: getattr(cfg, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")}


def _read_record(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise PlaygroundError(f"{folder}: no such reward-model folder")
    missing = [name for name in (RECORD, WEIGHTS) if not (folder / name).is_file()]
    if missing:
        raise PlaygroundError(f"{folder}: not a complete reward model, missing {' and '.join(missing)} "
                              f"(a reward-model folder holds {RECORD} and {WEIGHTS})")
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlaygroundError(f"{folder / RECORD}: unreadable ({exc})") from None
    if not isinstance(record, dict) or record.get("kind") != KIND or record.get("format") != RECORD_FORMAT:
        raise PlaygroundError(f"{folder / RECORD}: not a reward-model record of format {RECORD_FORMAT}")
    return record


def _config_from(record: dict[str, Any], folder: Path) -> RewardConfig:
    try:
        raw = dict(record["config"])
        lora = raw.pop("lora")
        return RewardConfig(**raw, lora=LoraSettings(**{**lora, "targets": tuple(lora["targets"])})).validate()
    except (KeyError, TypeError, ValueError, PlaygroundError) as exc:
        raise PlaygroundError(f"{folder / RECORD}: bad settings ({exc})") from None


def load_reward_model(folder: Path | str, base: str | Path | None = None, device: str | torch.device = "auto",
                      dtype: str | torch.dtype = "auto", tokenizer: PreTrainedTokenizerBase | None = None
                      ) -> RewardModel:
    """A saved reward model, ready to score. `base` defaults to the location recorded at training
    time; `tokenizer` to the one in `base`. Reads `reward_config.json` and the safetensors file
    only; a missing, corrupt or mismatched folder raises a `PlaygroundError` naming it."""
    folder = Path(folder)
    record = _read_record(folder)
    config = _config_from(record, folder)
    try:
        tensors = load_file(str(folder / WEIGHTS), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise PlaygroundError(f"{folder / WEIGHTS}: unreadable ({exc})") from None
    location = str(base) if base is not None else str(record.get("base_model", {}).get("source", ""))
    if not location:
        raise PlaygroundError(f"{folder / RECORD}: no base model recorded; pass the base model's location")
    device = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
        except Exception as exc:
            raise PlaygroundError(f"{location}: cannot load the base model's tokenizer ({exc})") from None
    model = _build(location, tokenizer, config, device, dtype)
    expected = _shape(model.decoder.config)
    recorded = record.get("base_model", {})
    differs = [k for k, v in expected.items() if k in recorded and recorded[k] != v]
    if differs:
        raise PlaygroundError(f"{folder}: trained on a different base model than {location} "
                              f"({', '.join(f'{k} {recorded[k]} ≠ {expected[k]}' for k in differs)})")
    _load_weights(model, tensors, folder)
    model.record = {k: v for k, v in record.items() if k not in ("format", "kind")}
    return model


def _load_weights(model: RewardModel, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """Copy saved LoRA and head weights into a freshly built `model`; every key must fit."""
    lora = {k.removeprefix(DECODER_PREFIX): v for k, v in tensors.items() if k.startswith(DECODER_PREFIX)}
    head = {k.removeprefix(HEAD_PREFIX): v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    want = set(get_peft_model_state_dict(model.decoder, adapter_name=POLICY_ADAPTER))
    if set(lora) != want or set(head) != {"weight", "bias"} or len(lora) + len(head) != len(tensors):
        raise PlaygroundError(f"{folder / WEIGHTS}: the weights do not match the recorded LoRA settings "
                              f"({len(set(lora) ^ want)} LoRA tensors differ)")
    try:
        with torch.no_grad():
            set_peft_model_state_dict(model.decoder, lora, adapter_name=POLICY_ADAPTER)
            model.head.load_state_dict(head)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[0][:300]
        raise PlaygroundError(f"{folder / WEIGHTS}: does not fit the base model ({first})") from None
