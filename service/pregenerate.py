"""Pre-generation: each prompt of a set answered by each of the set's models before anyone votes,
so voters never wait on a model.

One prompt at a time: the models lacking a response generate in one batched `generation.generate`
(models on one base share a batch), the texts are scored as a playground round's are, and all of
the prompt's new responses are stored in one transaction with INSERT OR IGNORE. A job killed at
any point has lost at most the prompt it was on; run again, it starts at the first prompt that
lacks a response, and no (prompt, model) is ever generated or stored twice.

Seeds: each prompt gets its own seed, drawn from the set's base seed and the prompt's ref, so a
response does not depend on which prompts were done before a restart. A batched `generate` draws
the whole batch from one random stream, so the models generated together are recorded (`batch`)
with the seed: the same seed and batch give the same text again.
"""

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from playground.core.errors import PlaygroundError
from playground.data.prompt_sets import PromptSet, SetPrompt, SetResponse, check_models
from playground.inference.generation import stream_generate
from playground.inference.settings import GenerationSettings
from playground.scoring.rounds import SCORE_FIELDS
from service.state import AppState


@dataclass(frozen=True)
class Step:
    """Where a job stands after a prompt: `done` of `total` prompts have every response."""

    done: int
    total: int
    generated: int  # responses this job has stored so far


@dataclass(frozen=True)
class PregenerateResult:
    prompts: int
    already: int  # prompts that had every response before this job
    generated: int  # responses this job stored
    stopped: bool  # should_stop ended it early


def choose_models(state: AppState, pset: PromptSet, models: Sequence[str], settings: GenerationSettings
                  ) -> PromptSet:
    """Make `models` the set's compared models, generated with `settings`; returns the set as stored.

    Once a set has votes its models are fixed: votes on one prompt must compare the same responses
    to be counted together. Its settings may change (the responses already stored keep theirs).
    """
    names = check_models(models, state.slot_catalog())
    settings.validate()
    if names != pset.models and pset.models and state.store.votes.voters_by_item(pset.id):
        raise PlaygroundError(f"prompt set {pset.name!r} already has votes on {', '.join(pset.models)}; its models "
                              "cannot change (import the prompts again as a new set to compare others)")
    state.store.prompt_sets.set_queue_models(pset.id, names, asdict(settings))
    return state.store.prompt_sets.get(pset.name)


def prompt_seed(base: int, ref: str) -> int:
    """The seed of one prompt: the same for a prompt whatever else the job did before."""
    return random.Random(f"{base}/{ref}").randrange(2**31)  # str seeds hash with SHA-512: stable everywhere


def fill_prompt(state: AppState, pset: PromptSet, prompt: SetPrompt, models: Sequence[str]) -> int:
    """Generate, score and store `models`' responses to one prompt; returns how many were new.

    Each response records the model that generated it as rated (`Catalog.rated_name` of the weights
    that generated it: the checkpoint serving as "policy" then), so votes cast later rate it right
    whatever serves then."""
    assert prompt.id is not None
    catalog = state.slot_catalog()
    unknown = [m for m in models if m not in catalog]
    if unknown:
        raise PlaygroundError(f"model(s) {', '.join(unknown)} of set {pset.name!r} are not loaded in this app")
    base = GenerationSettings(**pset.generation)
    settings = replace(base, seed=prompt_seed(base.seed, prompt.ref))
    *_, final = stream_generate(state.scheduler, [catalog[m] for m in models], prompt.messages, settings)
    texts = final.texts
    rated = [state.catalog.rated_name(w, m) for w, m in zip(final.weights, models, strict=True)]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    scores = state.scorer.score_responses(prompt.messages, completions, state.beta)
    record: dict[str, Any] = {**asdict(settings), "beta": state.beta, "batch": list(models)}
    return state.store.prompt_sets.add_responses([
        SetResponse(prompt.id, m, t, {f: float(getattr(s, f)) for f in SCORE_FIELDS}, record, r)
        for m, t, s, r in zip(models, texts, scores, rated, strict=True)
    ])


def pregenerate_steps(state: AppState, pset: PromptSet) -> Iterator[Step]:
    """Fill every prompt of the set, yielding a `Step` first and after each prompt generated.

    Stop iterating to stop the job: each prompt is stored before the next begins.
    """
    if not pset.models:
        raise PlaygroundError(f"prompt set {pset.name!r} has no models to generate with; choose them first")
    prompts = state.store.prompt_sets.prompts(pset.id)
    have = state.store.prompt_sets.response_models(pset.id)
    todo = [p for p in prompts if not set(pset.models) <= have.get(p.id or 0, set())]
    done, generated = len(prompts) - len(todo), 0
    yield Step(done, len(prompts), generated)
    for prompt in todo:
        assert prompt.id is not None
        # Looked up again: a voter's live generation may have filled it since the job started.
        missing = [m for m in pset.models if m not in state.store.prompt_sets.responses(prompt.id)]
        if missing:
            generated += fill_prompt(state, pset, prompt, missing)
        done += 1
        yield Step(done, len(prompts), generated)


def pregenerate(state: AppState, pset: PromptSet, on_progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> PregenerateResult:
    """Run the job to the end, or until `should_stop()` is true between prompts.

    `on_progress(done, total)` is called at the start and after each prompt (a tqdm bar, gr.Progress).
    """
    steps = pregenerate_steps(state, pset)
    first = step = next(steps)
    while True:
        if on_progress:
            on_progress(step.done, step.total)
        if step.done == step.total:
            return PregenerateResult(step.total, first.done, step.generated, stopped=False)
        if should_stop and should_stop():
            steps.close()
            return PregenerateResult(step.total, first.done, step.generated, stopped=True)
        step = next(steps)
