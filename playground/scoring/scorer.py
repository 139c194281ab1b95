"""Per-sequence log-probs under the policy and the reference, and the scores built on them.

Rows are scored in batches of rows that share their prompt where they can, each distinct prompt
computed once per batch (`shared_prompt`: a round's k slots, and many voters' rounds on one
queued prompt, pay for the prompt once), completions right-padded. Only completion positions go
through the vocabulary projection: for a 49k vocabulary that projection dominates the cost, and
prompt positions' logits are never used. Reference log-probs are cached
by (reference identity, the exact prompt and completion ids scored), so re-scoring the same pairs
under a new policy costs one policy pass. (Not by text: where a prompt's completions end is decided
by all of them together, see `encoding`.)

Rows are cut to `MAX_SEQUENCE_TOKENS` (or the model's context, if shorter): the same limit as
training, so the score shown for a response is the one a vote on it trains on.
"""

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from playground.core.beta import check_beta
from playground.core.chat import Text
from playground.core.limits import MAX_SEQUENCE_TOKENS
from playground.models.roles import Models, Role
from playground.objectives import dpo_loss, implicit_reward, preference_probability, sequence_kl_estimate
from playground.scoring.encoding import Encoded, encode, truncate
from playground.scoring.shared_prompt import completion_logps, split_model

Progress = Callable[[int], None]  # called with the number of rows just finished


@dataclass(frozen=True)
class ResponseScore:
    """Everything shown under one response. Log-probs are natural-log sums over completion tokens."""

    logp_policy: float
    logp_ref: float
    log_ratio: float  # log π_θ(y|x) − log π_ref(y|x)
    reward: float  # β · log_ratio
    n_tokens: int
    mean_logp_policy: float
    token_log_ratios: tuple[float, ...]
    token_logps_policy: tuple[float, ...]
    token_ids: tuple[int, ...]  # the completion tokens scored (end-of-turn included)
    truncated: bool  # prompt+completion was cut to the scorer's `max_length`


@dataclass(frozen=True)
class PairScore:
    chosen: ResponseScore
    rejected: ResponseScore
    reward_margin: float  # r_chosen − r_rejected
    p_chosen: float  # σ(margin): Bradley–Terry probability that chosen is preferred
    dpo_loss: float


def right_padded(rows: Sequence[Encoded], pad_id: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`rows` as one right-padded batch on `device`: ids and attention mask (B, T), the mask of the
    positions that predict a completion token (B, T; position t predicts token t + 1), and those
    completion tokens (N,), row-major."""
    lengths = [len(r.input_ids) for r in rows]
    ids = torch.full((len(rows), max(lengths)), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : lengths[i]] = torch.tensor(r.input_ids)
        attn[i, : lengths[i]] = 1
        target[i, len(r.prompt_ids) - 1 : lengths[i] - 1] = True
    ids, attn, target = ids.to(device), attn.to(device), target.to(device)
    return ids, attn, target, ids[:, 1:][target[:, :-1]]


def completion_token_logps(
    model: torch.nn.Module, rows: Sequence[Encoded], pad_id: int, device: torch.device
) -> list[torch.Tensor]:
    """One padded forward over `rows`; per row, the log-prob of each completion token (float32,
    on `device`, kept in the autograd graph if grad is enabled, so training reuses this)."""
    ids, attn, target_mask, targets = right_padded(rows, pad_id, device)

    split = split_model(model)
    if split is not None:
        decoder, head = split
        hidden = decoder(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state  # (B, T, H)
        logits = head(hidden[target_mask]).float()  # (N, V): completion positions only
    else:
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[target_mask].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)  # (N,)
    counts = [len(r.completion_ids) for r in rows]
    return list(torch.split(token_logps, counts))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def prompt_sorted_batches(rows: Sequence[Encoded], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of rows with the same prompt where possible (each batch then
    computes each of its prompts once, `shared_prompt`), completions of similar length together."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i].prompt_ids, -len(rows[i].completion_ids)))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass(eq=False)
class _ScoreJob:
    encoded: list[Encoded]
    beta: float
    scores: list["ResponseScore"] | None = None
    error: BaseException | None = None


class Scorer:
    """Scores completions under the policy and reference of `models`.

    One instance per app/CLI run; it owns the reference log-prob cache.
    """

    def __init__(self, models: Models, batch_size: int = 8, max_length: int | None = None,
                 cache_size: int = 100_000) -> None:
        self.models = models
        self.batch_size = batch_size
        context = getattr(models.policy.model.config, "max_position_embeddings", None) or MAX_SEQUENCE_TOKENS
        self.max_length = max_length or min(MAX_SEQUENCE_TOKENS, context)
        self._ref_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self._jobs: list[_ScoreJob] = []  # score_responses calls waiting for models.lock
        self._jobs_lock = threading.Lock()

    def encode(self, prompt: Text, completions: Sequence[Text]) -> list[Encoded]:
        return encode(self.models.tokenizer, prompt, completions, self.max_length)

    def sampled_row(self, prompt_ids: Sequence[int], sampled_ids: Sequence[int]) -> Encoded:
        """A generated response as scored: its prompt and sampled ids as they are, cut to `max_length`."""
        return truncate(tuple(prompt_ids), tuple(sampled_ids), self.max_length)

    def sampled_log_ratios(self, role: Role, rows: Sequence[Encoded]) -> list[float]:
        """Σ_t [log π_role(y_t|x, y_<t) − log π_ref(y_t|x, y_<t)] over each row's completion ids.

        For y sampled from π_role itself (T = 1, no top-p/top-k, no repetition penalty, ended by
        itself) this is an unbiased estimate of KL(π_role‖π_ref) at x (`sequence_kl_estimate`).
        Pass the sampled ids (`sampled_row`), not a re-encoding of their text. The reference pass
        is not cached: samples are rarely scored twice.
        """
        policy = self.token_logps(role, rows)
        ref = self.token_logps(self.models.reference, rows)
        return [float(sequence_kl_estimate((p - r)[None, :], torch.ones(1, len(p)))[0])
                for p, r in zip(policy, ref, strict=True)]

    def token_logps(self, role: Role, rows: Sequence[Encoded], progress: Progress | None = None
                    ) -> list[torch.Tensor]:
        """Per-token completion log-probs of each row under `role`, batched; CPU float32 tensors."""
        out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        pad_id = self.models.tokenizer.pad_token_id
        with torch.inference_mode(), role.active() as model:
            for batch in prompt_sorted_batches(rows, self.batch_size):
                logps = completion_logps(model, [rows[i] for i in batch], pad_id, self.models.device)
                for i, lp in zip(batch, logps, strict=True):
                    out[i] = lp.cpu()
                if progress:
                    progress(len(batch))
        return out

    @property
    def policy_is_reference(self) -> bool:
        """True while the policy has the reference's weights (a fresh adapter on the SFT model that
        is also the reference): its log-probs are then the reference's, bit for bit, and not computed twice."""
        return self.models.policy.ident == self.models.reference.ident

    def reference_token_logps(self, rows: Sequence[Encoded], progress: Progress | None = None
                              ) -> list[torch.Tensor]:
        """`token_logps` under the reference, served from the cache where the same ids were scored."""
        ref = self.models.reference
        full_keys = [f"{ref.ident}\x00{ids_key(r)}" for r in rows]
        missing = [i for i, k in enumerate(full_keys) if k not in self._ref_cache]
        if missing:
            fresh = self.token_logps(ref, [rows[i] for i in missing], progress)
            for i, lp in zip(missing, fresh, strict=True):
                self._ref_cache[full_keys[i]] = lp
        if progress and len(missing) < len(rows):
            progress(len(rows) - len(missing))
        out = []
        for k in full_keys:
            self._ref_cache.move_to_end(k)
            out.append(self._ref_cache[k])
        while len(self._ref_cache) > self._cache_size:
            self._ref_cache.popitem(last=False)
        return out

    def _policy_and_reference(self, rows: Sequence[Encoded], progress: Progress | None = None
                              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-token log-probs of `rows` under the policy and the reference (cached); one pass only
        while the policy has the reference's weights (`policy_is_reference`)."""
        ref = self.reference_token_logps(rows, progress)
        if not self.policy_is_reference:
            return self.token_logps(self.models.policy, rows, progress), ref
        if progress:  # the policy pass a caller counts on is done too
            progress(len(rows))
        return ref, ref

    def score_responses(self, prompt: Text, completions: Sequence[Text], beta: float) -> list[ResponseScore]:
        """Score k ≥ 1 completions of one prompt (the playground's slots), encoded together like a pair.

        Batched across threads: the job waits for `models.lock`, and whichever thread gets the lock
        first scores every job waiting at that moment in one set of forwards (many voters' rounds
        finish together). Call it without holding `models.lock`, or nothing can join."""
        job = _ScoreJob(self.encode(prompt, completions), check_beta(beta))
        with self._jobs_lock:
            self._jobs.append(job)
        with self.models.lock:
            with self._jobs_lock:
                jobs, self._jobs = self._jobs, []
            if jobs:
                self._score_jobs(jobs)
        if job.error is not None:
            raise job.error
        assert job.scores is not None
        return job.scores

    def _score_jobs(self, jobs: list["_ScoreJob"]) -> None:
        rows = [e for job in jobs for e in job.encoded]
        try:
            policy, ref = self._policy_and_reference(rows)
        except BaseException as exc:  # every waiting job learns it, not only the thread that ran it
            for job in jobs:
                job.error = exc
            raise
        start = 0
        for job in jobs:
            end = start + len(job.encoded)
            job.scores = [response_score(p, r, job.beta, e)
                          for p, r, e in zip(policy[start:end], ref[start:end], job.encoded, strict=True)]
            start = end

    def score_pairs(self, pairs: Sequence[tuple[Text, Text, Text]], beta: float,
                    progress: Progress | None = None) -> list[PairScore]:
        """Score (prompt, chosen, rejected) triples. Chosen and rejected of a pair share one forward
        and their prompt's encoding (`token_logps` batches rows by prompt)."""
        encoded = [e for prompt, chosen, rejected in pairs for e in self.encode(prompt, [chosen, rejected])]
        scores = self._score(encoded, beta, progress)
        return [pair_score(scores[2 * i], scores[2 * i + 1]) for i in range(len(pairs))]

    def _score(self, encoded: list[Encoded], beta: float, progress: Progress | None = None) -> list[ResponseScore]:
        check_beta(beta)
        policy, ref = self._policy_and_reference(encoded, progress)
        return [response_score(p, r, beta, e) for p, r, e in zip(policy, ref, encoded, strict=True)]


def response_score(policy: torch.Tensor, ref: torch.Tensor, beta: float, encoded: Encoded) -> ResponseScore:
    """Combine one completion's per-token log-probs (T,) under policy and reference."""
    logp_policy, logp_ref = policy.sum(), ref.sum()
    ratio = policy - ref
    return ResponseScore(
        logp_policy=float(logp_policy),
        logp_ref=float(logp_ref),
        log_ratio=float(logp_policy - logp_ref),
        reward=float(implicit_reward(logp_policy, logp_ref, beta)),
        n_tokens=int(policy.numel()),
        mean_logp_policy=float(logp_policy / max(policy.numel(), 1)),
        token_log_ratios=tuple(ratio.tolist()),
        token_logps_policy=tuple(policy.tolist()),
        token_ids=encoded.completion_ids,
        truncated=encoded.truncated,
    )


def ids_key(row: Encoded) -> str:
    """The reference cache's key for a row: a digest of exactly the ids scored and where the
    completion starts (the same text can be split differently next to other completions)."""
    ids = json.dumps([row.prompt_ids, row.completion_ids], separators=(",", ":"))
    return hashlib.blake2b(ids.encode(), digest_size=16).hexdigest()


def pair_score(chosen: ResponseScore, rejected: ResponseScore) -> PairScore:
    rc, rr = torch.tensor(chosen.reward), torch.tensor(rejected.reward)
    return PairScore(
        chosen=chosen,
        rejected=rejected,
        reward_margin=chosen.reward - rejected.reward,
        p_chosen=float(preference_probability(rc, rr)),
        dpo_loss=float(dpo_loss(rc, rr)),
    )
