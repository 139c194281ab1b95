"""Data actions: the votes a person may see and their counts, undo, export and import. The Data
tab, the Vote tab's admin panel and a gradio_client user call these same functions.

Who sees which votes: without logins, everyone sees every vote (a local single-user tool). With
logins, a voter sees only their own votes and the admin sees all, unless the app was started with
`--votes-visible-to-all` (`AppState.votes_visible_to_all`).
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from playground.core.chat import voter_name
from playground.data.exchange import ImportResult, export_rows, import_file
from playground.data.single_votes import SingleVote
from playground.data.votes import Binarize, Vote
from service.cleaning import vote_flags
from service.state import AppState


@dataclass(frozen=True)
class VoteCounts:
    by_voter: dict[str, int]  # pairwise votes per voter
    by_model: dict[str, int]  # responses voted on, per model name as shown in the slot
    thumbs_by_voter: dict[str, tuple[int, int]]  # single votes per voter: (👍, 👎)


@dataclass(frozen=True)
class Export:
    path: Path
    rows: int


def sees_all_votes(state: AppState, user: str | None) -> bool:
    """Whether the login `user` (None without logins) may read every voter's votes."""
    return state.votes_visible_to_all or state.access.is_admin(user)


def visible_votes(state: AppState, user: str | None, voter: str | None = None, model: str | None = None
                  ) -> list[Vote]:
    """The votes `user` may see, in the order cast, optionally only `voter`'s or those showing `model`."""
    voter = voter.strip() if voter and voter.strip() else None
    model = model.strip() if model and model.strip() else None
    if sees_all_votes(state, user):
        return state.store.votes.list(voter=voter, model=model)
    own = voter_name(user or "")
    if voter is not None and voter_name(voter) != own:
        return []  # another voter's votes: not visible, so none match
    return state.store.votes.list(voter=own, model=model)


def vote_counts(state: AppState, user: str | None) -> VoteCounts:
    """Votes per voter, responses per model and single votes per voter, over the votes `user` may see."""
    if sees_all_votes(state, user):
        return VoteCounts(state.store.votes.counts_by_voter(), state.store.votes.counts_by_model(),
                          state.store.single_votes.counts_by_voter())
    own = voter_name(user or "")
    votes = visible_votes(state, user)
    by_model = Counter(r.model for v in votes for r in v.responses)
    thumbs = state.store.single_votes.counts_by_voter()
    return VoteCounts({own: len(votes)} if votes else {}, dict(sorted(by_model.items())),
                      {own: thumbs[own]} if own in thumbs else {})


def undo_last_vote(state: AppState, user: str | None, typed: str) -> tuple[str, Vote | SingleVote | None]:
    """Delete the caller's most recent vote, pairwise or single (anyone may take back a mis-click of
    their own): the name it was looked up under (the login, or the typed name without logins) and
    the vote, if any."""
    who = state.access.voter(user, typed)
    return who, state.store.undo_last_vote(who)


def export_votes(state: AppState, fmt: str, binarize: Binarize = "all_pairs", suffix: str = ".jsonl",
                 include_imported: bool = False) -> Export:
    """Every vote as TRL preference rows, Chatbot Arena battles or TRL unpaired rows (KTO), in a new
    file under exports/; each row's `flags` say why the cleaning rules would leave it out
    (`service.cleaning.vote_flags`; empty: kept)."""
    path = state.export_path(fmt, suffix)
    return Export(path, export_rows(state.store, fmt, path, binarize, seed=0, include_imported=include_imported,
                                    flags=vote_flags(state)))


def export_merged(state: AppState, fmt: str, ties: str = "drop") -> Export:
    """The voting queue's votes merged per prompt (majority; `ties` "drop" or "keep"), in a new
    file under exports/ with the merge rule in `<file>.meta.json`."""
    path = state.export_path(f"{fmt}-merged", ".jsonl")
    return Export(path, export_rows(state.store, fmt, path, merge="majority", ties=ties))


def import_votes(state: AppState, path: Path) -> ImportResult:
    """Add the TRL preference pairs, or unpaired rows (prompt, completion, label), of a JSONL, Parquet
    or CSV file; they are trained on (unpaired rows by KTO)."""
    return import_file(state.store, path)
