"""The cleaning rules (`evals.cleaning`) as this app applies them: its own model names as identity
words and the server's daily vote cap (`cleaning_config`), and which stored votes the rules flag
(`vote_flags`), which exports carry and training leaves out by default."""

from collections.abc import Mapping, Sequence
from pathlib import Path

from evals.battles import human_battles
from evals.cleaning import CleaningConfig, clean, own_names
from playground.data.votes import Vote
from service.state import AppState


def cleaning_config(state: AppState) -> CleaningConfig:
    """Arena's rules with this app's own model names as identity words (the SFT and reference
    folders or hub ids, and every checkpoint id) and the server's daily vote cap."""
    sources = [state.models.sft.source, state.models.reference.source]
    names = [Path(s).name for s in sources if s] + list(state.checkpoints)
    return CleaningConfig(extra_words=own_names(names), max_votes_per_day=state.max_votes_per_day)


def vote_flags(state: AppState) -> dict[int, tuple[str, ...]]:
    """The stored votes some rule flags, by vote id: every flag of the vote's battles (a ranking is
    several battles), sorted. Votes no rule flags are absent."""
    battles = human_battles(state.store)
    report = clean(battles, cleaning_config(state))
    flagged: dict[int, set[str]] = {}
    for battle, flags in zip(battles, report.flags, strict=True):
        if flags and isinstance(battle.vote_id, int):
            flagged.setdefault(battle.vote_id, set()).update(flags)
    return {vote_id: tuple(sorted(flags)) for vote_id, flags in flagged.items()}


def by_flags(votes: Sequence[Vote], flags: Mapping[int, tuple[str, ...]], flagged: bool | None) -> list[Vote]:
    """The votes some rule flags (`flagged` True), none does (False), or all of them (None)."""
    return list(votes) if flagged is None else [v for v in votes if (v.id in flags) == flagged]
