"""The three model roles: SFT π_SFT, reference π_ref and policy π_θ.

Default: one copy of the SFT weights in memory. The policy is that model with a LoRA adapter
(peft); the SFT model and the reference are the same weights with the adapter disabled. A role
given by flag that differs from this (`--ref` or a full-model `--policy`) is loaded on its own.
"""

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from playground.core.errors import PlaygroundError
from playground.core.home import data_dir
from playground.models.devices import resolve_device, resolve_dtype
from playground.models.gguf_convert import convert_gguf, converted_dir, ensure_default_model
from playground.models.sources import Kind, Source, classify

log = logging.getLogger(__name__)

POLICY_ADAPTER = "default"  # peft's own default name; the adapter that training updates
# A `--policy` adapter folder is loaded twice: as POLICY_ADAPTER (served, and overwritten by a publish)
# and under this name, fixed, for rows that must finish on it. No checkpoint id starts with "_".
LOADED_POLICY_ADAPTER = "_loaded_policy"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.targets),
            task_type="CAUSAL_LM",
        )


@dataclass(frozen=True)
class ModelsConfig:
    """Which models fill the roles. `None` means the default for that role."""

    sft: str | None = None  # None: the packaged SmolLM2-135M-Instruct
    reference: str | None = None  # None: the SFT model, frozen
    policy: str | None = None  # None: SFT + a fresh LoRA adapter; or an adapter folder, or a full model
    device: str = "auto"
    dtype: str = "auto"
    # Converted GGUF models; under the data directory, never the working directory (a script's cwd).
    models_dir: Path = field(default_factory=lambda: data_dir() / "models")
    lora: LoraSettings = LoraSettings()


@dataclass(frozen=True)
class Role:
    """One role's view of a model: which module to call and whether its adapter is on."""

    name: str
    model: torch.nn.Module
    adapter: str | None  # active peft adapter; None on a PeftModel means adapters disabled
    source: str  # where it came from, for people
    ident: str  # identity of the weights (changes when they change): equal idents compute the same function

    @contextlib.contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        """The module to call for this role. Serialise callers that share a PeftModel: toggling
        its adapter is a mutation of shared state."""
        if isinstance(self.model, PeftModel):
            if self.adapter is None:
                try:
                    with self.model.disable_adapter():
                        yield self.model
                finally:  # re-enabling the adapter layers marks the active adapter trainable again
                    self.model.requires_grad_(False)
                return
            self.model.set_adapter(self.adapter, inference_mode=True)  # serving: keep weights frozen
        yield self.model


@dataclass
class Models:
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    sft: Role
    reference: Role
    policy: Role
    # Held around every use of the models: roles share one PeftModel whose adapter state is toggled
    # per call, and training publishes new adapter weights under it.
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Adapters on the policy's PeftModel whose weights never change (attached checkpoints, the loaded
    # `--policy` folder), by the identity of those weights: a row generating from the served policy
    # pins one of them, since a publish overwrites POLICY_ADAPTER in place.
    fixed_adapters: dict[str, str] = field(default_factory=dict)

    def roles(self) -> dict[str, Role]:
        return {"sft": self.sft, "reference": self.reference, "policy": self.policy}

    @property
    def policy_is_sft(self) -> bool:
        """True while the policy has the SFT weights (a fresh adapter, not yet trained or loaded)."""
        return self.policy.ident == self.sft.ident

    @property
    def shares_base(self) -> bool:
        """True when policy and reference are one PeftModel (batched mixed-adapter generation works)."""
        return self.policy.model is self.reference.model


def _weights_fingerprint(folder: Path) -> str:
    """Cheap identity for a model folder: config plus each weight file's name, size and mtime."""
    digest = hashlib.sha256(str(folder).encode())
    for f in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")):
        st = f.stat()
        digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def model_folder(source: Source, cfg: ModelsConfig) -> str:
    """A loadable location for a full model: a folder (GGUF converted on first use) or a hub id."""
    if source.kind is Kind.DEFAULT:
        return str(ensure_default_model(cfg.models_dir))
    if source.kind is Kind.GGUF:
        return str(convert_gguf(source.path, converted_dir(source.path, cfg.models_dir)))
    return source.location


def _load_error(role: str, location: str, what: str, exc: Exception) -> PlaygroundError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = ""
    if not Path(location).exists():
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (not a local path; the hub is switched off, HF_HUB_OFFLINE=1)" if offline else " (not a local path)"
    return PlaygroundError(f"--{role} {location}: cannot load {what}{hint}: {first_line}")


def load_tokenizer(location: str, role: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except Exception as exc:
        raise _load_error(role, location, "a tokenizer", exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(location: str, role: str, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """A frozen causal LM in eval mode on `device`; errors name the flag and the location."""
    try:
        # safetensors only: a pickled .bin checkpoint can run code when loaded.
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, use_safetensors=True)
    except Exception as exc:
        raise _load_error(role, location, "a causal language model", exc) from None
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def _ident(location: str) -> str:
    path = Path(location)
    return f"{location}@{_weights_fingerprint(path)}" if path.is_dir() else location


def attach_adapter(base: PreTrainedModel, adapter_dir: Path | None, lora: LoraSettings) -> PeftModel:
    """Wrap `base` with the policy adapter: loaded from `adapter_dir`, or fresh (LoRA's B = 0, so
    the fresh policy computes exactly what the base does)."""
    if adapter_dir is None:
        model = get_peft_model(base, lora.peft_config(), adapter_name=POLICY_ADAPTER)
    else:
        require_safetensors_adapter(adapter_dir, "--policy")
        try:
            model = PeftModel.from_pretrained(base, str(adapter_dir), adapter_name=POLICY_ADAPTER)
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise PlaygroundError(
                f"--policy {adapter_dir}: this LoRA adapter does not fit the SFT model ({first})"
            ) from None
    model.eval()
    model.requires_grad_(False)
    return model


def load_fixed_copy(model: PeftModel, adapter_dir: Path) -> str:
    """Load the `--policy` adapter a second time, frozen, as LOADED_POLICY_ADAPTER (the served
    adapter stays active); returns that name."""
    model.load_adapter(str(adapter_dir), adapter_name=LOADED_POLICY_ADAPTER, is_trainable=False)
    model.set_adapter(POLICY_ADAPTER, inference_mode=True)
    model.requires_grad_(False)
    return LOADED_POLICY_ADAPTER


def require_safetensors_adapter(folder: Path, what: str) -> None:
    """Adapters load only from `adapter_model.safetensors`: peft would fall back to a pickled
    `adapter_model.bin`, and unpickling can run code."""
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise PlaygroundError(f"{what} {folder}: no {ADAPTER_WEIGHTS} (adapters are read from safetensors only, "
                              "never from pickled .bin files)")


def adapter_params(model: PeftModel) -> dict[str, torch.nn.Parameter]:
    """The policy adapter's LoRA weights by name (`…lora_A.default.weight`, …)."""
    return {n: p for n, p in model.named_parameters() if "lora_" in n and f".{POLICY_ADAPTER}." in f"{n}."}


def load_models(cfg: ModelsConfig) -> Models:
    """Load every role. Validates all flags before loading anything heavy."""
    sft_src = classify(cfg.sft, "sft")
    ref_src = classify(cfg.reference, "ref")
    pol_src = classify(cfg.policy, "policy")
    for src, role in ((sft_src, "sft"), (ref_src, "ref")):
        if src.kind is Kind.ADAPTER:
            raise PlaygroundError(
                f"--{role} {src.location}: a LoRA adapter folder; only --policy takes an adapter"
            )
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)

    sft_location = model_folder(sft_src, cfg)
    tokenizer = load_tokenizer(sft_location, "sft")
    base = load_causal_lm(sft_location, "sft", device, dtype)
    base_ident = _ident(sft_location)

    fixed: dict[str, str] = {}  # Models.fixed_adapters
    if pol_src.kind in (Kind.DEFAULT, Kind.ADAPTER):
        adapter_dir = pol_src.path if pol_src.kind is Kind.ADAPTER else None
        peft_model = attach_adapter(base, adapter_dir, cfg.lora)
        sft = Role("sft", peft_model, None, sft_location, base_ident)
        policy_source = str(adapter_dir) if adapter_dir else f"{sft_location} + fresh LoRA"
        # A fresh adapter (LoRA B = 0) computes exactly what the SFT model does: it carries the SFT
        # weights' identity, so it is rated as "sft" and never battles SFT as another model.
        # Training or serving a checkpoint publishes a new identity (`set_policy_weights`).
        policy_ident = f"{base_ident}+{adapter_dir}" if adapter_dir else base_ident
        policy = Role("policy", peft_model, POLICY_ADAPTER, policy_source, policy_ident)
        if adapter_dir:
            fixed[policy_ident] = load_fixed_copy(peft_model, adapter_dir)
    else:
        sft = Role("sft", base, None, sft_location, base_ident)
        pol_location = model_folder(pol_src, cfg)
        policy = Role("policy", load_causal_lm(pol_location, "policy", device, dtype), None,
                      pol_location, _ident(pol_location))

    if ref_src.kind is Kind.DEFAULT:
        reference = Role("reference", sft.model, None, sft.source, sft.ident)
    else:
        ref_location = model_folder(ref_src, cfg)
        reference = Role("reference", load_causal_lm(ref_location, "ref", device, dtype), None,
                         ref_location, _ident(ref_location))
    return Models(tokenizer, device, dtype, sft, reference, policy, fixed_adapters=fixed)
