"""Prompt sets for the voting queue: import (the shipped example set in one call), guidelines,
overlap, progress and agreement. The Vote tab, its admin panel and a gradio_client user call these
same functions; who may call which (the admin role) is checked by the caller, as for every action."""

from dataclasses import dataclass
from pathlib import Path

from evals.annotation import AgreementReport, agreement_report
from evals.kl import EVAL_PROMPTS
from playground.data.exchange import import_prompts
from playground.data.prompt_sets import PromptSet, check_guidelines, check_overlap
from playground.data.queue import SetProgress, set_progress
from service.state import AppState

EXAMPLE_SET = "example"  # the name the shipped example prompts are imported under
EXAMPLE_FILE = EVAL_PROMPTS  # docs/examples/eval-prompts.jsonl


@dataclass(frozen=True)
class Imported:
    pset: PromptSet
    prompts: int


def set_names(state: AppState) -> list[str]:
    """Every prompt set's name, oldest first."""
    return [s.name for s in state.store.prompt_sets.list()]


def prompt_set(state: AppState, name: str | None) -> PromptSet:
    """The set called `name`; a `PlaygroundError` naming the sets there are if none (or no name)."""
    return state.store.prompt_sets.get(name or "")


def import_prompt_set(state: AppState, path: Path, name: str, overlap: int = 1, from_preferences: bool = False,
                      source: str | None = None) -> Imported:
    """Import a prompt-set file (or a TRL preference file's prompts) as the new set `name`, whole or
    not at all; `source` names the file as people know it (an upload's temporary name means nothing)."""
    pset = import_prompts(state.store, path, name, overlap, from_preferences, source=source)
    return Imported(pset, len(state.store.prompt_sets.prompts(pset.id)))


def load_example_set(state: AppState) -> Imported:
    """The shipped example prompts (docs/examples/eval-prompts.jsonl) as the set "example": what a
    first-time admin starts from. Once imported, it is returned as it is."""
    if EXAMPLE_SET in set_names(state):
        pset = prompt_set(state, EXAMPLE_SET)
        return Imported(pset, len(state.store.prompt_sets.prompts(pset.id)))
    return import_prompt_set(state, EXAMPLE_FILE, EXAMPLE_SET, source=EXAMPLE_FILE.name)


def set_guidelines(state: AppState, name: str | None, text: str) -> PromptSet:
    """Replace the Markdown guidelines shown above the set's queue; returns the set as stored."""
    pset = prompt_set(state, name)
    state.store.prompt_sets.set_guidelines(pset.id, check_guidelines(text))
    return prompt_set(state, pset.name)


def set_overlap(state: AppState, name: str | None, overlap: float | int) -> PromptSet:
    """How many votes a prompt of the set needs before it leaves the queue; returns the set as stored."""
    pset = prompt_set(state, name)
    state.store.prompt_sets.set_overlap(pset.id, check_overlap(overlap))
    return prompt_set(state, pset.name)


def overall_progress(state: AppState, name: str | None) -> tuple[PromptSet, SetProgress]:
    pset = prompt_set(state, name)
    return pset, set_progress(state.store, pset)


def agreement(state: AppState, name: str | None) -> AgreementReport:
    """Agreement between the set's voters (Krippendorff's α, agreement with the majority, position
    bias, the most disputed prompts)."""
    pset = prompt_set(state, name)
    refs = {p.id: p.ref for p in state.store.prompt_sets.prompts(pset.id) if p.id is not None}
    return agreement_report(state.store.votes.in_set(pset.id), refs)
