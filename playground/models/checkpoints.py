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
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from playground.core.atomic import new_folder
from playground.core.errors import PlaygroundError
from playground.data.rows import PreferenceRow
from playground.models.roles import POLICY_ADAPTER, Models, Role, adapter_params, require_safetensors_adapter

RECORD = "record.json"
RECORD_FORMAT = 1
# Checkpoint ids become adapter names and dropdown values; a temporary folder starts with "." and
# never matches, and neither does anything that could climb out of the checkpoint folder.
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def pairs_sha256(rows: Sequence[PreferenceRow]) -> str:
    """sha256 over the rows as TRL reads them: one canonical JSON object (sorted keys) per line;
    values JSON cannot hold (a Parquet timestamp column, say) enter as their `str`."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row.as_trl(), sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def new_checkpoint_id() -> str:
    """`dpo-YYYYmmdd-HHMMSS-xxxxxx` (UTC): sorts by time; the random tail keeps ids unique."""
    return f"dpo-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def read_record(folder: Path) -> dict[str, Any] | None:
    """A checkpoint's `record.json`, or None where the folder has none (a foreign adapter)."""
    try:
        return json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_checkpoint(model: PeftModel, out_dir: Path, record: dict[str, Any]) -> Path:
    """Save the policy adapter of `model` plus `record` (its `id` and `format` filled in) as a new
    folder under `out_dir`; returns the folder. Nothing is left behind on failure."""
    ckpt_id = new_checkpoint_id()
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
    return Role(name, model, name, str(folder), f"{models.sft.ident}+{name}")


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


def serve_checkpoint(models: Models, role: Role) -> None:
    """Make an attached checkpoint the serving policy (one click in the Train tab)."""
    prefix = f".{role.adapter}."
    weights = {n.replace(prefix, f".{POLICY_ADAPTER}."): p for n, p in role.model.named_parameters()
               if "lora_" in n and prefix in f"{n}."}
    set_policy_weights(models, weights, role.source, role.ident)
