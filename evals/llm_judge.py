"""An LLM as pairwise judge (`--judge llm:PATH`): a local causal LM reads the question and two
answers and its verdict is read from its next-token probabilities, not from free text.

Model. Any local causal LM, an HF folder or a `.gguf` file, loaded exactly as `--sft` loads one
(`playground.models.roles`: a GGUF is converted once under the data directory's models/), frozen,
on the app's device and dtype. Its tokenizer must have a chat template (an instruct model).

Prompt. `SYSTEM` and `USER` below (criteria: helpfulness, correctness, concision; the question;
answer A; answer B; "Answer with A, B or tie."), applied with the judge tokenizer's chat template
and its generation prompt, so the next token is the first token of the judge's answer.

Verdict. With z the logits at that position and t_A, t_B, t_tie the label token ids,

    p(ℓ) = exp(z[t_ℓ]) / Σ_{m ∈ {A, B, tie}} exp(z[t_m])        (softmax over just those three logits)

and the verdict is the likeliest label (model_a, model_b or tie; an exact tie between the top two
is a tie). p(A), p(B), p(tie) are stored in each order's details as `p_a`, `p_b`, `p_tie`. Label
token ids (`label_token_ids`): the first token of each label encoded on its own without special
tokens ("A", "B", "tie"; for SmolLM2 these are single tokens, ids 49, 50 and 36521). A label that
spans several tokens is represented by its first token; labels whose first tokens coincide cannot
be told apart and are refused with an error.

Batching. Rows are right-padded in batches of similar length (`length_sorted_batches`); only the
answer position of each row goes through the LM head (`split_model`), so a batch's logits are
(rows, vocabulary), never (rows, tokens, vocabulary). Right padding leaves every real token's
positions and attention as in an unbatched pass.

Both orders. Like every judge, it sees each pair as (A, B) and (B, A) (`evals.judge.both_orders`);
an LLM judge is the one that is often position-biased, which `position_consistency` measures.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from evals.judge import Judge, Verdict, both_orders
from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.core.home import data_dir
from playground.data.votes import ARENA_A, ARENA_B, ARENA_TIE
from playground.models.roles import ModelsConfig, load_causal_lm, load_tokenizer, model_folder
from playground.models.sources import Kind, classify
from playground.scoring.scorer import length_sorted_batches
from playground.scoring.shared_prompt import split_model

SYSTEM = ("You are an impartial judge of answers written by AI assistants. Compare two answers to the same "
          "question on helpfulness, correctness and concision. Ignore the order in which they are shown and "
          "do not prefer an answer for being longer.")
USER = """[Question]
{question}

[Answer A]
{answer_a}

[Answer B]
{answer_b}

Which answer is better? Answer with A, B or tie."""
LABELS = ("A", "B", "tie")  # in this order: p_a, p_b, p_tie
WINNERS = (ARENA_A, ARENA_B, ARENA_TIE)
BATCH_SIZE = 8  # rows per forward pass


def label_token_ids(tokenizer: PreTrainedTokenizerBase, labels: Sequence[str] = LABELS) -> tuple[int, ...]:
    """Each label's first token id (module docstring); refuses labels with no token or a shared first one."""
    ids = []
    for label in labels:
        tokens = tokenizer.encode(label, add_special_tokens=False)
        if not tokens:
            raise PlaygroundError(f"the judge's tokenizer encodes {label!r} to no token")
        ids.append(tokens[0])
    if len(set(ids)) < len(ids):
        spelled = ", ".join(f"{label!r} → {tokenizer.convert_ids_to_tokens(i)!r}" for label, i in zip(labels, ids,
                                                                                                      strict=True))
        raise PlaygroundError(f"the judge's tokenizer starts two answer labels with the same token ({spelled}): "
                              "their probabilities cannot be told apart")
    return tuple(ids)


def question_text(prompt: Sequence[Message]) -> str:
    """The battle's prompt as the judge reads it: a lone user message as it is, a longer
    conversation (a system message, earlier turns) as "role: content" lines."""
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def judge_messages(prompt: Sequence[Message], answer_a: str, answer_b: str) -> list[Message]:
    """The chat the judge answers: `SYSTEM`, then `USER` filled in."""
    user = USER.format(question=question_text(prompt), answer_a=answer_a, answer_b=answer_b)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def encode_questions(tokenizer: PreTrainedTokenizerBase, chats: Sequence[Sequence[Message]],
                     max_tokens: int) -> list[list[int]]:
    """Token ids of each judge chat with the generation prompt; a row longer than `max_tokens` (the
    model's context) is refused, since cutting it would cut the answer position."""
    if not getattr(tokenizer, "chat_template", None):
        raise PlaygroundError("the judge's tokenizer has no chat template: an LLM judge needs an instruct (chat) model")
    rows = []
    for chat in chats:
        ids = list(tokenizer.apply_chat_template(list(chat), tokenize=True, add_generation_prompt=True,
                                                 return_dict=True)["input_ids"])
        if len(ids) > max_tokens:
            raise PlaygroundError(f"a judge prompt is {len(ids)} tokens, over the judge model's "
                                  f"context of {max_tokens}; generate shorter answers (--max-new-tokens)")
        rows.append(ids)
    return rows


def label_probabilities(model: torch.nn.Module, rows: Sequence[Sequence[int]], label_ids: Sequence[int],
                        pad_id: int, device: torch.device, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """(rows, labels) float32 on the CPU: the softmax over the label tokens' logits at each row's
    last position (module docstring), in right-padded batches of similar length."""
    out = torch.empty((len(rows), len(label_ids)), dtype=torch.float32)
    labels = torch.tensor(list(label_ids), device=device)
    split = split_model(model)
    with torch.inference_mode():
        for batch in length_sorted_batches([len(r) for r in rows], batch_size):
            lengths = torch.tensor([len(rows[i]) for i in batch], device=device)
            ids = torch.full((len(batch), int(lengths.max())), pad_id, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for k, i in enumerate(batch):
                ids[k, : len(rows[i])] = torch.tensor(rows[i])
                attn[k, : len(rows[i])] = 1
            ids, attn = ids.to(device), attn.to(device)
            last = (torch.arange(len(batch), device=device), lengths - 1)
            if split is not None:
                decoder, head = split
                hidden = decoder(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
                logits = head(hidden[last])  # (batch, vocabulary): the answer positions only
            else:  # a head that is not a plain linear map: the full forward
                logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[last]
            out[batch] = torch.softmax(logits[:, labels].float(), dim=-1).cpu()
    return out


def verdict(probabilities: Sequence[float]) -> Verdict:
    """The likeliest of A, B, tie (a tie when the top two are equal), with p_a, p_b, p_tie."""
    p_a, p_b, p_tie = (float(p) for p in probabilities)
    ranked = sorted(zip((p_a, p_b, p_tie), WINNERS, strict=True), key=lambda pw: -pw[0])
    winner = ARENA_TIE if ranked[0][0] == ranked[1][0] else ranked[0][1]
    return winner, {"p_a": p_a, "p_b": p_b, "p_tie": p_tie}


def llm_judge(path: str, device: torch.device, dtype: torch.dtype, models_dir: Path | None = None,
              batch_size: int = BATCH_SIZE) -> Judge:
    """The judge `llm:PATH` (module docstring): `path` a local HF model folder or .gguf file, loaded
    like `--sft` (a GGUF converted under `models_dir`, default the data directory's models/)."""
    if not path.strip():
        raise PlaygroundError("--judge llm:PATH needs the judge model's path (an HF model folder or a .gguf file)")
    source = classify(path.strip(), "judge")
    if source.kind not in (Kind.HF_FOLDER, Kind.GGUF):
        raise PlaygroundError(f"--judge llm:{path}: a {source.kind.value}; the judge must be a local HF model "
                              "folder or .gguf file")
    location = model_folder(source, ModelsConfig(models_dir=models_dir or data_dir() / "models"))
    tokenizer = load_tokenizer(location, "judge")
    label_ids = label_token_ids(tokenizer)
    model = load_causal_lm(location, "judge", device, dtype)
    context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)

    def decide(prompts: Sequence[Sequence[Message]], a: Sequence[str], b: Sequence[str]) -> list[Verdict]:
        chats = [judge_messages(p, x, y) for p, x, y in zip(prompts, a, b, strict=True)]
        rows = encode_questions(tokenizer, chats, context)
        probabilities = label_probabilities(model, rows, label_ids, tokenizer.pad_token_id, device, batch_size)
        return [verdict(p) for p in probabilities.tolist()]

    return Judge(f"llm:{source.path.name}", both_orders(decide))
