"""Training checkpoints: one folder per finished run, written atomically, never modified after.

`<out_dir>/<id>/` holds the peft adapter (`adapter_config.json`, `adapter_model.safetensors`),
loadable with `--policy <folder>`, and `record.json`: where it came from (parent checkpoint, base
model, the sha256 of the pairs), the hyper-parameters, per-step metrics and held-out metrics.
The folder is built under a temporary name and renamed into place, so a reader sees either
nothing or a complete checkpoint.
"""

import hashlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from playground.core.atomic import new_folder
from playground.core.errors import PlaygroundError
from playground.data.rows import PreferenceRow
from playground.data.store.checkpoints import RegisteredCheckpoint
from playground.models.roles import POLICY_ADAPTER, Models, Role, adapter_params, require_safetensors_adapter

RECORD = "record.json"
RECORD_FORMAT = 1
# Checkpoint ids become adapter names and dropdown values; a temporary folder starts with "." and
# never matches, and neither does anything that could climb out of the checkpoint folder.
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class HeldOut:
    """Held-out metrics of a run (DPO's implicit reward, or a reward model's r) at one moment."""

    pairs: int
    accuracy: float  # fraction of pairs with r_w > r_l, ties counting ½ (chance level 0.5)
    margin: float  # mean r_w − r_l


@dataclass(frozen=True)
class CheckpointRecord:
    """What the tables show of a checkpoint's `record.json`, parsed once (`parse`)."""

    id: str
    parent: str | None  # the id of the checkpoint it was trained from; None: from the SFT model
    created: datetime | None  # when the run finished (UTC, as recorded)
    pairs: int | None  # usable pairs: train + held out
    steps: int  # optimizer steps taken
    hyperparameters: Mapping[str, Any]  # the run's DPOConfig as recorded (beta, lr, loss, lora, …)
    heldout_before: HeldOut | None  # None when nothing was held out
    heldout_after: HeldOut | None

    @property
    def beta(self) -> float | None:
        return self.hyperparameters.get("beta")

    def created_local(self) -> str:
        """`created` in local time to the minute, as the tables show it ("" when not recorded)."""
        return self.created.astimezone().strftime("%Y-%m-%d %H:%M") if self.created else ""

    @classmethod
    def registered(cls, checkpoint: RegisteredCheckpoint) -> "CheckpointRecord":
        """From the store's checkpoint registry (`store.checkpoints.list()`): its record, under the
        id it was registered as."""
        return cls.parse({**checkpoint.record, "id": checkpoint.id})

    @classmethod
    def parse(cls, record: Mapping[str, Any]) -> "CheckpointRecord":
        """From a `record.json` as written by `write_checkpoint`; a record that is not one raises a
        `PlaygroundError`. Parts an older record lacks come out as None."""
        try:
            parent = record.get("parent") or {}
            created = record.get("created")
            held = record.get("heldout") or {}
            return cls(
                id=str(record["id"]), parent=parent.get("id"),
                created=datetime.fromisoformat(created) if created else None,
                pairs=(record.get("pairs") or {}).get("count"), steps=len(record.get("steps") or []),
                hyperparameters=dict(record.get("hyperparameters") or {}),
                heldout_before=HeldOut(**held["before"]) if held.get("before") else None,
                heldout_after=HeldOut(**held["after"]) if held.get("after") else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlaygroundError(f"not a checkpoint record ({type(exc).__name__}: {exc})") from None


def pairs_sha256(rows: Sequence[PreferenceRow]) -> str:
    """sha256 over the rows as TRL reads them: one canonical JSON object (sorted keys) per line;
    values JSON cannot hold (a Parquet timestamp column, say) enter as their `str`."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row.as_trl(), sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def new_checkpoint_id(prefix: str = "dpo") -> str:
    """`<prefix>-YYYYmmdd-HHMMSS-xxxxxx` (UTC), the prefix naming the training method (`dpo`,
    `rloo`, …): sorts by time within a method; the random tail keeps ids unique."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def read_record(folder: Path) -> dict[str, Any] | None:
    """A checkpoint's `record.json`, or None where the folder has none (a foreign adapter)."""
    try:
        return json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_checkpoint(model: PeftModel, out_dir: Path, record: dict[str, Any], prefix: str = "dpo") -> Path:
    """Save the policy adapter of `model` plus `record` (its `id` and `format` filled in) as a new
    folder under `out_dir` named `new_checkpoint_id(prefix)`; returns the folder. Nothing is left
    behind on failure."""
    ckpt_id = new_checkpoint_id(prefix)
    final = out_dir / ckpt_id
    with new_folder(final, "a checkpoint") as tmp:
        # peft writes the adapter named "default" (= POLICY_ADAPTER) at the folder's top level.
        model.save_pretrained(str(tmp), selected_adapters=[POLICY_ADAPTER])
        full = {"format": RECORD_FORMAT, "id": ckpt_id, **record}
        (tmp / RECORD).write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return final


def complete_checkpoints(out_dir: Path) -> list[Path]:
    """Finished checkpoint folders under `out_dir`, oldest first. A run killed mid-write leaves only
    a dot-named temporary folder, which is never listed."""
    if not out_dir.is_dir():
        return []
    found = [d for d in out_dir.iterdir() if d.is_dir() and CHECKPOINT_NAME.fullmatch(d.name) and read_record(d)]
    return sorted(found, key=lambda d: d.name)


def attach_checkpoint(models: Models, folder: Path) -> Role:
    """Load a checkpoint as a named adapter on the policy's PeftModel, beside the served one, so
    a response slot can generate from it (in the same mixed-adapter batch as the others)."""
    model = models.policy.model
    if not isinstance(model, PeftModel):
        raise PlaygroundError("checkpoints are LoRA adapters; the policy here is a full model")
    name = folder.name
    if not CHECKPOINT_NAME.fullmatch(name):
        raise PlaygroundError(f"{folder}: {name!r} is not a checkpoint name (letters, digits, '.', '_', '-')")
    require_safetensors_adapter(folder, "checkpoint")
    with models.lock:
        if name not in model.peft_config:
            try:
                model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                raise PlaygroundError(f"{folder}: not a usable adapter for this SFT model ({exc})") from None
            model.set_adapter(POLICY_ADAPTER, inference_mode=True)  # loading must not change what is served
        role = Role(name, model, name, str(folder), f"{models.sft.ident}+{name}")
        models.fixed_adapters.setdefault(role.ident, name)
    return role


def set_policy_weights(models: Models, weights: dict[str, torch.Tensor], source: str, ident: str) -> None:
    """Replace the served adapter's LoRA weights (keys as in `adapter_params`) under `models.lock`,
    all or nothing: a reader sees the old adapter or the new one, never a mix."""
    with models.lock, torch.no_grad():
        served = adapter_params(models.policy.model)
        missing = set(served) - set(weights)
        if missing:
            raise PlaygroundError(f"the new adapter lacks {len(missing)} of the served adapter's weights")
        backup = {n: p.detach().clone() for n, p in served.items()}
        try:
            for n, p in served.items():
                p.copy_(weights[n])
        except BaseException:
            for n, p in served.items():
                p.copy_(backup[n])
            raise
        models.policy = replace(models.policy, source=source, ident=ident)


def publish_trained(models: Models, trainee: PeftModel, out_dir: Path, record: dict[str, Any],
                    prefix: str = "dpo") -> Path:
    """A finished run's end: write `trainee`'s adapter and `record` as a checkpoint under `out_dir`
    (its id starting with `prefix`), then make it the serving policy (`set_policy_weights`: under
    `models.lock`, all or nothing). On any failure the new folder is removed and the error raised:
    nothing written, nothing served."""
    checkpoint = None
    try:
        checkpoint = write_checkpoint(trainee, out_dir, record, prefix)
        trained = {n: p.detach() for n, p in adapter_params(trainee).items()}
        set_policy_weights(models, trained, str(checkpoint), f"{models.sft.ident}+{checkpoint.name}")
    except BaseException:
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)
        raise
    return checkpoint


def serve_checkpoint(models: Models, role: Role) -> None:
    """Make an attached checkpoint the serving policy (one click in the Train tab)."""
    prefix = f".{role.adapter}."
    weights = {n.replace(prefix, f".{POLICY_ADAPTER}."): p for n, p in role.model.named_parameters()
               if "lora_" in n and prefix in f"{n}."}
    set_policy_weights(models, weights, role.source, role.ident)
