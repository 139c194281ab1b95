"""Forwards over many completions of few prompts that compute each distinct prompt once.

Rows that share a prompt — a round's k slots, K RLHF samples per prompt, many voters answering the
same queued prompt — would otherwise pay for the prompt once per row (and per model): for a chat
prompt with a system message that is most of the tokens. Here each distinct prompt but its last
token goes through the model once (`prompt_cache`, one left-padded forward); its KV cache is
gathered to the rows that share it; then one right-padded forward runs each row's suffix — its last
prompt token and its completion — against that cache. Every suffix position sees exactly the
context it sees in a full forward of its own row, so the results equal one forward per row up to
float rounding (≤ 1e-5 nats per token in float32; `tests/test_rlhf.py`, `tests/test_scoring.py`).

Two readings of the suffix forward:
- `token_stats`: the log-prob (and optionally entropy, value) of each completion token, from the
  positions that predict it; only those positions go through the vocabulary projection.
- `last_token_hidden`: the last hidden state at each row's final token (a reward model's pooling).

Rows need at least one prompt token (`encoding.truncate` always keeps some).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from transformers import Cache

from playground.core.errors import PlaygroundError
from playground.scoring.encoding import Encoded


def split_model(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder returning hidden states, LM head), or None where the head is not a plain linear map
    of the last hidden state (logit soft-capping or scaling), which then takes the full forward."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    cfg = inner.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    head = inner.get_output_embeddings()
    decoder = getattr(inner, inner.base_model_prefix, None)
    if head is None or decoder is None or decoder is inner:
        return None
    return decoder, head


@dataclass(frozen=True)
class TokenStats:
    """Per-token tensors (B, T) over completion tokens, right-padded to a common width, `mask` 1.0 on tokens."""

    logps: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor | None = None
    values: torch.Tensor | None = None


def prompt_cache(decoder: torch.nn.Module, prompts: Sequence[tuple[int, ...]], pad_id: int, device: torch.device
                 ) -> tuple[Cache | None, torch.Tensor]:
    """Each row's prompt but its last token, encoded once per distinct prompt: one left-padded
    forward of `decoder` (to the longest prompt but one, S) fills a KV cache, which is then gathered
    to the rows (in the graph when grad is on). Returns it (None when S = 0) and the rows' prefix
    attention mask (B, S)."""
    if any(not p for p in prompts):
        raise PlaygroundError("a row without prompt tokens cannot share a prompt encoding")
    distinct = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    span = max(len(p) for p in distinct) - 1
    which = torch.tensor([distinct[p] for p in prompts], device=device)
    mask = torch.tensor([[0] * (span + 1 - len(p)) + [1] * (len(p) - 1) for p in distinct], device=device)
    if not span:
        return None, mask[which]
    ids = torch.tensor([[pad_id] * (span + 1 - len(p)) + list(p[:-1]) for p in distinct], device=device)
    cache = decoder(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True).past_key_values
    cache.batch_select_indices(which)
    return cache, mask[which]


def _suffix_inputs(decoder: torch.nn.Module, rows: Sequence[Encoded], suffixes: Sequence[Sequence[int]],
                   pad_id: int, device: torch.device, width: int) -> tuple[dict[str, Any], torch.Tensor]:
    """The forward's keyword arguments for `suffixes` (each row's tokens after its prompt but its
    last, right-padded to `width`) against the rows' shared prompt cache, and the suffix mask (B, width)."""
    cache, prefix_mask = prompt_cache(decoder, [r.prompt_ids for r in rows], pad_id, device)
    ids = torch.tensor([[*s, *[pad_id] * (width - len(s))] for s in suffixes], device=device)  # (B, width)
    lengths = torch.tensor([len(s) for s in suffixes], device=device)
    mask = torch.arange(width, device=device)[None, :] < lengths[:, None]  # (B, width)
    positions = torch.tensor([len(r.prompt_ids) - 1 for r in rows], device=device)[:, None] + torch.arange(
        width, device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.cat([prefix_mask, mask.long()], dim=1),
              "position_ids": positions, "past_key_values": cache, "use_cache": cache is not None}
    return inputs, mask


def token_stats(model: torch.nn.Module, rows: Sequence[Encoded], pad_id: int, device: torch.device,
                width: int | None = None, entropy: bool = False, value_head: torch.nn.Linear | None = None
                ) -> TokenStats:
    """Each completion token's log-prob under `model` (float32, in the graph when grad is on),
    optionally its entropy and the value head's V at the position predicting it (B, `width`).

    The suffix is each row's last prompt token and its completion but its last token: every
    position of it predicts a completion token, so only those go through the vocabulary projection."""
    counts = [len(r.completion_ids) for r in rows]
    width = width or max(1, *counts)
    split = split_model(model)
    inputs, target = _suffix_inputs(split[0] if split is not None else model, rows,
                                    [[r.prompt_ids[-1], *r.completion_ids[:-1]] for r in rows], pad_id, device, width)
    target &= torch.arange(width, device=device)[None, :] < torch.tensor(counts, device=device)[:, None]
    mask = target.float()
    if split is not None:
        hidden = split[0](**inputs).last_hidden_state[target]  # (N, H)
        logits = split[1](hidden).float()  # (N, V)
    else:
        out = model(**inputs, output_hidden_states=True)
        hidden, logits = out.hidden_states[-1][target], out.logits[target].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    tokens = torch.tensor([t for r in rows for t in r.completion_ids], device=device)  # (N,), row-major

    def padded(flat: torch.Tensor) -> torch.Tensor:  # (N,) → (B, width), row-major like `target`
        return torch.zeros(mask.shape, dtype=flat.dtype, device=device).masked_scatter(target, flat)

    return TokenStats(
        logps=padded(log_probs.gather(1, tokens[:, None]).squeeze(1)), mask=mask,
        entropy=padded(-(log_probs.exp() * log_probs).sum(-1)) if entropy else None,
        values=padded(value_head(hidden.float()).squeeze(-1)) if value_head is not None else None)


def completion_logps(model: torch.nn.Module, rows: Sequence[Encoded], pad_id: int, device: torch.device
                     ) -> list[torch.Tensor]:
    """`token_stats`' log-probs as one (T_i,) tensor per row."""
    stats = token_stats(model, rows, pad_id, device)
    return [stats.logps[i, : len(r.completion_ids)] for i, r in enumerate(rows)]


def last_token_hidden(decoder: torch.nn.Module, rows: Sequence[Encoded], pad_id: int, device: torch.device
                      ) -> torch.Tensor:
    """The last hidden state (B, H) of `decoder` (a model returning `last_hidden_state`) at each
    row's final token; the suffix is each row's last prompt token and its whole completion."""
    suffixes = [[r.prompt_ids[-1], *r.completion_ids] for r in rows]
    inputs, _ = _suffix_inputs(decoder, rows, suffixes, pad_id, device, max(len(s) for s in suffixes))
    hidden = decoder(**inputs).last_hidden_state  # (B, W, H)
    return hidden[torch.arange(len(rows), device=device), torch.tensor([len(s) - 1 for s in suffixes], device=device)]
