"""Cleaning battles before they are rated: rules that flag, never delete.

Preference data goes bad in known ways; Chatbot Arena's published pipeline guards against each
(`fastchat/serve/monitor/clean_battle_data.py`, `elo_analysis.py`, `deduplication.py`). Each rule
here flags battles with a reason; `kept` leaves flagged battles out of what is rated, exported or
trained on, and the stored votes stay as they were.

- **identity** (Arena's leak filter): a battle whose prompt or answers name a model breaks its
  anonymity. As Arena: every message of both sides, lowercased, searched for each word of
  `IDENTITY_WORDS` as a substring; the first word found is the one counted. Our list adds the names
  this app serves under (`own_names`). An anonymous battle with a leak is flagged
  `identity:<word>`; a named (side-by-side) one is not: its voter saw the names anyway.
- **outlier voters**, two tests of each voter with at least `min_votes` votes:
  *Arena's* (`arena_outliers`, `outlier_detect` exactly): for each of the voter's first `max_votes`
  votes, in order, p↑ and p↓ are the shares of that model pair's decisive votes (every voter's,
  ties left out, oriented by the pair's alphabetical order) at or below, and at or above, this vote
  (a tie is ½); the running products Π 1/(2p) are e-values, and a voter whose product crosses 1/α
  is flagged, with the number of votes read at the crossing. Its power comes from lopsided pairs:
  among near-equal models it missed a voter who always clicks A (`tests/test_cleaning.py`).
  So *ours* (`voter_tests`) runs two tests per voter on their decisive votes: position, the share
  of votes for the answer shown first against the randomised ½ (exact two-sided binomial p;
  anonymous battles only, where the order is drawn at random: in a named side-by-side round a
  voter may well prefer the model they put in slot A); and agreement, the voter's log-likelihood
  under a Bradley–Terry fit of everyone else's battles,
  ℓ = Σ_k [y_k log p_k + (1 − y_k) log(1 − p_k)] (p_k the fit's probability that a
  wins), against its distribution were the voter to vote by that fit: mean Σ [p log p + (1 − p)
  log(1 − p)], variance Σ p(1 − p) log²(p/(1 − p)), so z = (ℓ − mean)/sd and p = Φ(z), lower tail
  (a voter who keeps choosing the weaker model is unlikely under the fit; a normal approximation in
  place of a parametric bootstrap). A voter's p is the smaller of the two times 2 (Bonferroni), and the
  voters are flagged by Holm's step-down over all tested voters at α, so the chance of flagging any
  honest voter stays ≤ α.
- **duplicates** (Arena's `deduplication.py`): prompts (the user turns, each followed by a newline,
  cut to 10,000 characters) asked more often than the `dedup_percentile` quantile of all prompts'
  counts keep a seeded sample of that many battles (pandas' `sample`, `random_state=dedup_seed`);
  the rest are flagged `duplicate-prompt`. And a voter voting the same prompt and answers twice
  counts once: the later ones are flagged `repeat-vote`.
- **caps** (Arena's `limit_user_votes`): each voter's first `max_votes_per_day` battles of a UTC
  day are kept (Arena uses the server's local date); later ones are flagged `over-daily-cap`.
"""

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evals.battle import Battle
from evals.ratings.bradley_terry import ELO_PER_LOGIT, aggregate, fit_ratings
from evals.ratings.indexed import index_battles
from evals.ratings.newton import sigmoid
from playground.core.errors import PlaygroundError
from playground.data.votes import ARENA_A, ARENA_B

# Chatbot Arena's IDENTITY_WORDS (clean_battle_data.py, lowercased when matched).
IDENTITY_WORDS = (
    "vicuna", "lmsys", "koala", "uc berkeley", "open assistant", "laion", "chatglm", "chatgpt", "gpt-4",
    "openai", "anthropic", "claude", "bard", "palm", "lamda", "google", "gemini", "llama", "qianwan", "qwen",
    "alibaba", "mistral", "zhipu", "KEG lab", "01.AI", "AI2", "Tülu", "Tulu", "deepseek", "hermes", "cohere",
    "DBRX", "databricks",
)
# What the app's default model calls itself and its maker.
OWN_WORDS = ("smollm", "hugging face", "huggingface")
RULES = ("identity", "outliers", "duplicates", "caps")  # the rules `kept` may leave out, by name
# Each flag's rule, by the flag's name (before any ":").
FLAG_RULES = {"identity": "identity", "outlier-voter": "outliers", "duplicate-prompt": "duplicates",
              "repeat-vote": "duplicates", "over-daily-cap": "caps"}
DEDUP_CHARS = 10_000  # Arena keys a prompt by its first 10,000 characters of user turns
DAY = 86_400


@dataclass(frozen=True)
class CleaningConfig:
    """Which rules run and their settings (defaults: Arena's)."""

    identity: bool = True
    outliers: bool = True
    duplicates: bool = True
    extra_words: tuple[str, ...] = ()  # more names to treat as leaks (the app's own models, `own_names`)
    alpha: float = 0.05
    min_votes: int = 5  # voters with fewer decisive votes are not tested
    max_votes: int = 100  # Arena's test reads at most this many of a voter's votes
    dedup_percentile: float = 0.9999
    dedup_seed: int = 42
    max_votes_per_day: int | None = None

    def validate(self) -> "CleaningConfig":
        problems = [msg for ok, msg in (
            (0 < self.alpha < 1, f"alpha {self.alpha}: expected a level between 0 and 1"),
            (self.min_votes >= 1, f"min_votes {self.min_votes}: expected ≥ 1"),
            (self.max_votes >= self.min_votes, f"max_votes {self.max_votes}: expected ≥ min_votes ({self.min_votes})"),
            (0 < self.dedup_percentile <= 1,
             f"dedup_percentile {self.dedup_percentile}: expected a quantile in (0, 1]"),
            (self.max_votes_per_day is None or self.max_votes_per_day >= 1,
             f"max_votes_per_day {self.max_votes_per_day}: expected ≥ 1"),
        ) if not ok]
        if problems:
            raise PlaygroundError("; ".join(problems))
        return self


@dataclass(frozen=True)
class VoterEvidence:
    """Why a voter was flagged (or, for ours, what was tested)."""

    voter: str
    test: str  # "arena" or "position+agreement"
    votes: int  # votes read (Arena: up to the crossing)
    statistic: float  # Arena: the e-value at the crossing; ours: the Holm-adjusted p
    detail: str


@dataclass(frozen=True)
class CleaningReport:
    """Every battle's flags (in the battles' order; empty: kept) and the evidence per rule."""

    flags: tuple[tuple[str, ...], ...]
    identity_words: dict[str, int] = field(default_factory=dict)  # leaks per word (Arena's count_leak)
    outlier_voters: tuple[VoterEvidence, ...] = ()
    duplicated_prompts: dict[str, tuple[int, int]] = field(default_factory=dict)  # prompt: (battles, kept)
    capped_voters: dict[str, int] = field(default_factory=dict)  # voter: battles over the cap

    @property
    def excluded(self) -> int:
        return sum(1 for f in self.flags if f)

    def counts(self) -> dict[str, int]:
        """Flagged battles per rule (a battle may count under several)."""
        return dict(Counter(flag.split(":")[0] for flags in self.flags for flag in set(flags)))


def own_names(names: Iterable[str]) -> tuple[str, ...]:
    """The leak words for the app's own models: `OWN_WORDS` and each name it serves (model folder and
    hub names, checkpoint ids), lowercased, without the role names every battle shows anyway."""
    roles = {"policy", "reference", "sft", "ref"}
    return tuple(dict.fromkeys([*OWN_WORDS, *(n.lower() for n in names if n and n.lower() not in roles)]))


def clean(battles: Sequence[Battle], config: CleaningConfig = CleaningConfig()) -> CleaningReport:
    """Run every rule of `config` over `battles` (module docstring)."""
    config.validate()
    flags: list[list[str]] = [[] for _ in battles]
    words: dict[str, int] = {}
    if config.identity:
        words = identity_leaks(battles, (*IDENTITY_WORDS, *config.extra_words), flags)
    evidence: list[VoterEvidence] = []
    if config.outliers:
        evidence = [*arena_outliers(battles, config), *voter_tests(battles, config)]
        bad = {e.voter for e in evidence}
        for n, b in enumerate(battles):
            if b.voter in bad:
                flags[n].append(f"outlier-voter:{b.voter}")
    duplicated: dict[str, tuple[int, int]] = {}
    if config.duplicates:
        duplicated = duplicate_prompts(battles, config, flags)
        repeat_votes(battles, flags)
    capped = daily_caps(battles, config.max_votes_per_day, flags) if config.max_votes_per_day else {}
    return CleaningReport(tuple(tuple(f) for f in flags), words, tuple(evidence), duplicated, capped)


def kept(battles: Sequence[Battle], report: CleaningReport, rules: Iterable[str] = RULES) -> list[Battle]:
    """The battles none of `rules` (names in `RULES`) flagged."""
    if len(report.flags) != len(battles):
        raise PlaygroundError(f"the cleaning report covers {len(report.flags)} battles, not these {len(battles)}")
    rules = set(rules)
    unknown = rules - set(RULES)
    if unknown:
        raise PlaygroundError(f"unknown cleaning rule(s) {', '.join(sorted(unknown))}; expected {', '.join(RULES)}")
    return [b for b, flags in zip(battles, report.flags, strict=True)
            if not any(FLAG_RULES[flag.split(":")[0]] in rules for flag in flags)]


def identity_leaks(battles: Sequence[Battle], words: Sequence[str], flags: list[list[str]]) -> dict[str, int]:
    """Flag anonymous battles that name a model (Arena's rule), counting leaks per word."""
    lowered = [w.lower() for w in words]
    counts: dict[str, int] = {}
    for n, b in enumerate(battles):
        if b.anonymous is False:
            continue
        text = "".join(m["content"].lower() for m in b.prompt or ()) + "".join(t.lower() for t in b.texts or ())
        word = next((w for w in lowered if w in text), None)
        if word is not None:
            counts[word] = counts.get(word, 0) + 1
            flags[n].append(f"identity:{word}")
    return counts


def _pair_score(b: Battle) -> tuple[tuple[str, str], float]:
    """The battle's model pair in alphabetical order and the score of its first model (tie ½)."""
    pair = (min(b.model_a, b.model_b), max(b.model_a, b.model_b))
    if b.winner not in (ARENA_A, ARENA_B):
        return pair, 0.5
    winner = b.model_a if b.winner == ARENA_A else b.model_b
    return pair, 1.0 if winner == pair[0] else 0.0


def arena_outliers(battles: Sequence[Battle], config: CleaningConfig) -> list[VoterEvidence]:
    """Chatbot Arena's `outlier_detect` (module docstring): voters with ≥ `min_votes` battles,
    checked in the order of their battles."""
    decisive: dict[tuple[str, str], list[float]] = {}
    by_voter: dict[str, list[tuple[tuple[str, str], float]]] = {}
    for b in battles:
        pair, score = _pair_score(b)
        if score != 0.5:
            decisive.setdefault(pair, []).append(score)
        if b.voter is not None:
            by_voter.setdefault(b.voter, []).append((pair, score))
    shares = {pair: np.array(scores) for pair, scores in decisive.items()}
    out = []
    for voter, votes in by_voter.items():
        if len(votes) < config.min_votes:
            continue
        log_up = log_down = 0.0
        for count, (pair, score) in enumerate(votes[: config.max_votes], start=1):
            ratings = shares.get(pair, np.empty(0))
            up = float((ratings <= score).mean()) if len(ratings) else math.nan
            down = float((ratings >= score).mean()) if len(ratings) else math.nan
            log_up += _log_e(up)
            log_down += _log_e(down)
            threshold = math.log(1 / config.alpha)
            if log_up > threshold or log_down > threshold:  # NaN (a pair without decisive votes) never crosses
                crossed = log_up if log_up > threshold else log_down
                out.append(VoterEvidence(voter, "arena", count, math.exp(min(crossed, 700.0)),
                                         f"e-value crossed 1/α = {1 / config.alpha:g} at vote {count}"))
                break
    return out


def _log_e(p: float) -> float:
    """log 1/(2p), Arena's per-vote e-value; p = 0 is infinite evidence, as in Arena's product."""
    if math.isnan(p):  # a pair without decisive votes: numpy's mean of nothing, which Arena's product carries
        return math.nan
    return math.inf if p == 0 else -math.log(2 * p)


def voter_tests(battles: Sequence[Battle], config: CleaningConfig) -> list[VoterEvidence]:
    """Our position and agreement tests with Holm's correction (module docstring)."""
    voters = Counter(b.voter for b in battles if b.voter is not None and b.winner in (ARENA_A, ARENA_B))
    tested: list[tuple[str, float, str, int]] = []
    for voter, n in voters.items():
        if n < config.min_votes:
            continue
        mine = [b for b in battles if b.voter == voter and b.winner in (ARENA_A, ARENA_B)]
        # Only where the order was drawn at random: in a named side-by-side round A is a chosen model.
        shuffled = [b for b in mine if b.anonymous is not False]
        firsts = sum(b.winner == ARENA_A for b in shuffled)
        p_position = fair_coin_p(firsts, len(shuffled)) if len(shuffled) >= config.min_votes else 1.0
        z = _likelihood_z([b for b in battles if b.voter != voter], mine)
        p_agreement = 0.5 * math.erfc(-z / math.sqrt(2)) if z is not None else 1.0  # Φ(z)
        p = min(1.0, 2 * min(p_position, p_agreement))
        agreement = "no fit" if z is None else f"z {z:+.2f}"
        detail = (f"A chosen in {firsts} of {len(shuffled)} decisive anonymous votes (p {p_position:.2g}); "
                  f"agreement {agreement} "
                  f"(p {p_agreement:.2g})")
        tested.append((voter, p, detail, n))
    out = []
    for rank, (voter, p, detail, n) in enumerate(sorted(tested, key=lambda t: t[1])):
        adjusted = p * (len(tested) - rank)
        if adjusted > config.alpha:
            break  # Holm: stop at the first voter not rejected
        out.append(VoterEvidence(voter, "position+agreement", n, adjusted, detail))
    return out


def fair_coin_p(k: int, n: int) -> float:
    """The exact two-sided binomial p of k successes in n fair trials: 2 · P(X ≤ min(k, n − k)), at most 1."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _likelihood_z(others: Sequence[Battle], mine: Sequence[Battle]) -> float | None:
    """z of `mine`'s log-likelihood under a Bradley–Terry fit of `others` (module docstring); None
    when the others' battles say nothing about the voter's pairs."""
    fitted = [b for b in others if b.model_a != b.model_b]
    if not fitted:
        return None
    indexed = index_battles(fitted)
    theta = fit_ratings(aggregate(indexed), anchor=0) / ELO_PER_LOGIT  # log-strengths, up to a constant
    where = {m: k for k, m in enumerate(indexed.models)}
    known = [b for b in mine if b.model_a in where and b.model_b in where]
    if not known:
        return None
    logit = np.array([theta[where[b.model_a]] - theta[where[b.model_b]] for b in known])
    p = sigmoid(logit)
    y = np.array([1.0 if b.winner == ARENA_A else 0.0 for b in known])
    log_p, log_q = np.log(p), np.log1p(-p)
    observed = float((y * log_p + (1 - y) * log_q).sum())
    mean = float((p * log_p + (1 - p) * log_q).sum())
    variance = float((p * (1 - p) * logit**2).sum())  # log(p / (1 − p)) is the logit
    return (observed - mean) / math.sqrt(variance) if variance > 0 else None


def prompt_key(b: Battle) -> str:
    """Arena's dedup key: the user turns, each followed by a newline, first 10,000 characters."""
    return "".join(f"{m['content']}\n" for m in b.prompt or () if m["role"] == "user")[:DEDUP_CHARS]


def duplicate_prompts(battles: Sequence[Battle], config: CleaningConfig,
                      flags: list[list[str]]) -> dict[str, tuple[int, int]]:
    """Arena's down-sampling of prompts above the count percentile (module docstring)."""
    keyed = pd.DataFrame({"prompt": [prompt_key(b) for b in battles]})
    keyed = keyed[keyed["prompt"] != ""]
    if keyed.empty:
        return {}
    counts = keyed["prompt"].value_counts()
    cutoff = counts.quantile(config.dedup_percentile)
    out = {}
    groups = keyed.groupby("prompt")
    for prompt in counts[counts > cutoff].index:
        group = groups.get_group(prompt)
        sampled = set(group.sample(n=int(cutoff), random_state=config.dedup_seed).index)
        for n in group.index:
            if n not in sampled:
                flags[n].append("duplicate-prompt")
        out[str(prompt)] = (len(group), len(sampled))
    return out


def repeat_votes(battles: Sequence[Battle], flags: list[list[str]]) -> None:
    """Flag a voter's second and later votes on the same prompt and answers (either order)."""
    seen: set[tuple[str, str, frozenset[tuple[str, str]]]] = set()
    for n, b in enumerate(battles):
        if b.voter is None or b.texts is None or b.prompt is None:
            continue
        key = (b.voter, prompt_key(b), frozenset({(b.model_a, b.texts[0]), (b.model_b, b.texts[1])}))
        if key in seen:
            flags[n].append("repeat-vote")
        seen.add(key)


def daily_caps(battles: Sequence[Battle], cap: int, flags: list[list[str]]) -> dict[str, int]:
    """Flag each voter's battles beyond their first `cap` of a UTC day (in the battles' order)."""
    counts: Counter[tuple[str, int]] = Counter()
    over: Counter[str] = Counter()
    for n, b in enumerate(battles):
        if b.voter is None or b.tstamp is None:
            continue
        day = int(b.tstamp // DAY)
        counts[b.voter, day] += 1
        if counts[b.voter, day] > cap:
            flags[n].append("over-daily-cap")
            over[b.voter] += 1
    return dict(over)
