"""What every run that trains the policy (DPO and its siblings, TRL's DPOTrainer, RLHF) trains and
compares against: a copy of the served adapter, and the reference beside it.

Train a copy, publish at the end. `models.policy.model` is served while training runs (generation
in other threads). Training never touches it: it trains a second module tree built by
`copy.deepcopy` with every base parameter and buffer shared (no extra memory) and only the policy
adapter's LoRA weights copied (a few MB). The reference for the default roles is that copy with
its adapter switched off, which flips flags on the copy, not on the served model. Only a finished
run changes the served policy: its LoRA weights are copied in under `models.lock` (which the
generation scheduler holds for each step), so a reader sees the old adapter or the new one, never a
mix. A NaN/inf loss or gradient, a cancel, or any exception drops the copy: the served adapter
stays bit-identical and nothing is written. A separate adapter name on the served PeftModel was
not used: switching the active adapter is shared state, and every step would need the lock.
"""

import contextlib
import copy
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from peft import PeftModel

from playground.core.errors import PlaygroundError
from playground.models.roles import POLICY_ADAPTER, LoraSettings, Models, adapter_params


def adapter_lora_settings(model: PeftModel) -> LoraSettings:
    """The LoRA settings of `model`'s policy adapter as loaded."""
    cfg = model.peft_config[POLICY_ADAPTER]
    targets = [cfg.target_modules] if isinstance(cfg.target_modules, str) else cfg.target_modules
    return LoraSettings(r=cfg.r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=tuple(sorted(targets)))


def check_policy(models: Models, lora: LoraSettings, run: str = "DPO") -> None:
    model = models.policy.model
    if not isinstance(model, PeftModel) or models.policy.adapter != POLICY_ADAPTER:
        raise PlaygroundError(
            f"{run} trains the policy's LoRA adapter, but the policy is a full model "
            f"({models.policy.source}); use the default policy or a LoRA adapter folder with --policy"
        )
    have = adapter_lora_settings(model)
    if (have.r, have.alpha, set(have.targets)) != (lora.r, lora.alpha, set(lora.targets)):
        raise PlaygroundError(
            f"the policy's adapter has LoRA r={have.r}, alpha={have.alpha}, targets {','.join(have.targets)}, "
            f"but the run asks for r={lora.r}, alpha={lora.alpha}, targets {','.join(sorted(lora.targets))}; "
            "give LoRA settings that match the adapter (--lora-r, --lora-alpha, --lora-targets)"
        )


def trainable_copy(policy: PeftModel) -> PeftModel:
    """A second module tree sharing every parameter and buffer of `policy` except the policy
    adapter's LoRA weights, which are copied and made trainable (see the module docstring)."""
    own = {id(p) for p in adapter_params(policy).values()}
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(policy.parameters(), policy.buffers())
                            if id(t) not in own}
    trainee = copy.deepcopy(policy, memo)
    trainee.base_model.enable_adapter_layers()  # in case it was copied inside a disable_adapter()
    trainee.set_adapter(POLICY_ADAPTER)
    for p in adapter_params(trainee).values():
        p.requires_grad_(True)
    return trainee


@contextlib.contextmanager
def reference_model(models: Models, trainee: PeftModel) -> Iterator[torch.nn.Module]:
    """The reference model: for the default roles the copy with its adapter off, else `--ref`'s."""
    if models.shares_base:
        with trainee.disable_adapter():
            yield trainee
    else:
        with models.reference.active() as model:
            yield model
