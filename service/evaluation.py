"""Evaluation actions on a running app's state: KL to the reference, judge runs, the Dashboard's
report and its downloadable tables. The Dashboard tab, a gradio_client user and a script (e.g.
`playground judge`) call these same functions; the numbers themselves come from `evals`."""

import itertools
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from evals.battle import Battle
from evals.battles import judge_battle, read_battles
from evals.cleaning import RULES
from evals.dashboard import Report, build_report, write_tables, zip_tables
from evals.judge import Judge
from evals.judges import make_judge
from evals.kl import EVAL_PROMPTS, KLEstimate, eval_prompts
from evals.kl import estimate_kl as estimate_role_kl
from evals.llm_judge import llm_judge
from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.data.prompt_sets import check_models
from playground.inference.generation import stream_generate
from playground.inference.settings import GenerationSettings
from playground.training.reward_model import load_reward_model
from service.cleaning import cleaning_config
from service.state import AppState
from service.training import reward_model_dir, reward_models

Progress = Callable[[int, int, str], None]  # (done, total, what is being done)

BUILT_IN_PROMPTS = f"built-in eval prompts ({EVAL_PROMPTS.name})"  # the judge's default prompt source
MAX_BOOTSTRAP = 5000  # rounds: enough for stable 95% intervals, bounded so one request cannot hog the server
# With logins on, a voter's report: the Dashboard's default. A 5000-round report costs the server
# five times as much, and a voter can ask for one with every Refresh and every opening of the tab.
VOTER_MAX_BOOTSTRAP = 1000


def estimate_kl(state: AppState, progress: Progress | None = None, samples: int = 2,
                max_new_tokens: int = 48, reward_model: str | None = None) -> dict[str, KLEstimate]:
    """KL(π_θ ‖ π_ref) of every checkpoint on the shipped prompt set (`evals.kl`); with a reward model
    (a name from `service.training.reward_models`), also its mean reward on the same samples, for
    the SFT model too (the point at KL = 0 the checkpoints moved from). The estimates are kept in
    `state.kl_estimates` for the Dashboard's table and plots, and returned."""
    if not state.checkpoints:
        raise PlaygroundError("no checkpoints yet: train one in the Train tab")
    prompts = eval_prompts()
    reward = None
    if reward_model:
        if reward_model not in reward_models(state):
            raise PlaygroundError(f"no reward model {reward_model!r}; the trained ones are: "
                                  f"{', '.join(reward_models(state)) or 'none yet'}")
        models = state.models
        scorer = load_reward_model(reward_model_dir(state) / reward_model, base=models.sft.source,
                                   device=models.device, dtype=models.dtype, tokenizer=models.tokenizer)
        reward = scorer.score
    roles = {**({"sft": state.models.sft} if reward else {}), **state.checkpoints}
    per_role = len(prompts) * samples
    total = len(roles) * per_role
    found = {}
    for n, (name, role) in enumerate(list(roles.items())):
        step = None if progress is None else (
            lambda i, _, n=n, name=name: progress(n * per_role + i, total, f"{name}: sample {i}/{per_role}"))
        found[name] = state.kl_estimates[name] = estimate_role_kl(
            state.scheduler, state.scorer, role, prompts, samples=samples, max_new_tokens=max_new_tokens,
            progress=step, reward=reward, reward_model=reward_model or None)
    return found


def judge_sources(state: AppState) -> list[str]:
    """Where judge prompts can come from: the built-in set, then the stored prompt sets by name."""
    return [BUILT_IN_PROMPTS, *(s.name for s in state.store.prompt_sets.list())]


def judge_prompts(state: AppState, source: str | None = None, path: Path | None = None) -> list[list[Message]]:
    """The prompts of a stored prompt set named `source`, of the prompt file `path`, or (neither,
    or `BUILT_IN_PROMPTS`) the shipped eval prompts."""
    if source and source != BUILT_IN_PROMPTS:
        return [list(p.messages) for p in state.store.prompt_sets.prompts(state.store.prompt_sets.get(source).id)]
    return eval_prompts(path or EVAL_PROMPTS)


def judge_names(state: AppState) -> list[str]:
    """Judges whose battles are stored (each can join the leaderboard)."""
    return list(state.store.judges.counts_by_judge())


def app_judge(state: AppState, kind: str, phrase: str = "", reward_model: Path | None = None,
              llm: str = "") -> Judge:
    """A judge by kind ("shorter", "longer", "contains", "avoids", "reward-model", "llm") with its
    phrase, reward-model folder or LLM path (a local HF folder or .gguf file; see `evals.judge`),
    loaded on the app's device."""
    if kind in ("contains", "avoids"):
        return make_judge(f"{kind}:{phrase.strip()}", state.models)
    if kind == "reward-model":
        if reward_model is None:
            raise PlaygroundError("pick a trained reward model (train one on the Dashboard)")
        return make_judge(f"reward-model:{reward_model}", state.models)
    if kind == "llm":
        return llm_judge(llm.strip(), state.models.device, state.models.dtype, state.data_dir / "models")
    return make_judge(kind, state.models)


def run_judge(state: AppState, prompts: Sequence[Sequence[Message]], models: Sequence[str], judge: Judge,
              settings: GenerationSettings, progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None) -> list[Battle]:
    """Generate, judge and store; returns the battles stored (nothing is stored if stopped early).

    Each prompt is answered by every model in one batched generation (seed = `settings.seed` +
    prompt number), each pair of models is one battle per prompt in a seeded random order (so a
    judge's position bias favours no model), and models are stored under the names the weights that
    generated each answer are rated under (`Catalog.rated_name`)."""
    names = check_models(models, state.slot_catalog())  # 2..4 distinct, loaded
    rated = [state.catalog.rated_now(n) for n in names]
    if len(set(rated)) < len(rated):
        raise PlaygroundError(f"{', '.join(names)} include two names for the same weights ({', '.join(rated)})")
    if not prompts:
        raise PlaygroundError("no prompts to judge")
    settings.validate()
    catalog = state.slot_catalog()
    rng = random.Random(settings.seed)
    pending: list[dict[str, Any]] = []
    for n, messages in enumerate(prompts):
        if should_stop and should_stop():
            raise PlaygroundError(f"judging stopped after {n} of {len(prompts)} prompts; nothing was stored")
        *_, final = stream_generate(state.scheduler, [catalog[m] for m in names], messages,
                                    replace(settings, seed=settings.seed + n))
        texts = final.texts
        rated = [state.catalog.rated_name(w, m) for w, m in zip(final.weights, names, strict=True)]
        for i, j in itertools.combinations(range(len(names)), 2):
            if rng.random() < 0.5:
                i, j = j, i
            pending.append({"prompt": list(messages), "model_a": rated[i], "model_b": rated[j],
                            "text_a": texts[i], "text_b": texts[j]})
        if progress:
            progress(n + 1, len(prompts), "generating")
    verdicts = judge.decide([b["prompt"] for b in pending], [b["text_a"] for b in pending],
                            [b["text_b"] for b in pending])
    battles = [{**b, "winner": w, "details": d} for b, (w, d) in zip(pending, verdicts, strict=True)]
    run = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
    state.store.judges.add(judge.name, run, battles)
    return [judge_battle(b) for b in state.store.judges.list(judge.name, run=run)]


@dataclass(frozen=True)
class ReportQuery:
    """What the Dashboard asks for: human votes and/or these judges' battles, plus the rows of a
    Chatbot Arena battle file; win rates against `baseline`, ratings anchored at `anchor`, intervals
    from `bootstrap` resamples; optionally one prompt category's battles only, and style control."""

    human: bool = True
    judges: Sequence[str] = ()
    baseline: str = "sft"
    anchor: str | None = None
    bootstrap: int = 1000
    battles_file: Path | None = None
    category: str | None = None
    style_control: bool = False
    # The cleaning rules (`evals.cleaning.RULES`) whose flagged battles are left out; all are counted.
    clean: Sequence[str] = RULES


def bootstrap_limit(state: AppState, user: str | None) -> int:
    """The most bootstrap rounds `user` (a login name, None without one) may ask for at once:
    MAX_BOOTSTRAP for the admin (everyone, without logins), VOTER_MAX_BOOTSTRAP for a voter."""
    return MAX_BOOTSTRAP if state.access.is_admin(user) else VOTER_MAX_BOOTSTRAP


def check_bootstrap(state: AppState, query: ReportQuery, user: str | None) -> None:
    limit = bootstrap_limit(state, user)
    if not 0 <= query.bootstrap <= limit:
        raise PlaygroundError(f"bootstrap rounds must be 0..{limit}, got {query.bootstrap}"
                              + (f" (a voter's limit; the admin may ask for up to {MAX_BOOTSTRAP})"
                                 if limit < MAX_BOOTSTRAP else ""))


def dashboard_report(state: AppState, query: ReportQuery, user: str | None = None) -> Report:
    """What the Dashboard shows (`evals.dashboard.build_report`) for `query`, with KL where
    estimated; asked for by `user` (see `bootstrap_limit`). Writes nothing."""
    check_bootstrap(state, query, user)
    file = query.battles_file
    extra = [replace(b, source=file.name) for b in read_battles(file)] if file else []
    return build_report(state.store, query.human, query.judges, query.baseline or "sft", query.anchor or None,
                        query.bootstrap, kl=state.kl_estimates, extra=extra, category=query.category or None,
                        style_control=query.style_control, cleaning=cleaning_config(state), exclude=query.clean)



def dashboard_downloads(state: AppState, query: ReportQuery, user: str | None = None) -> Path:
    """Every table of `query`'s report as CSV and JSON, and the ratings JSON, in one new zip under
    exports/ (written only when asked for; older ones beyond the last few are pruned by
    `export_path`). Asked for by `user`: with logins on, a voter has the voters' bootstrap limit
    and `state.voter_downloads`' rate (`service.quotas`)."""
    check_bootstrap(state, query, user)  # a refused query counts no download
    if not state.access.is_admin(user):
        state.voter_downloads.take(user or "", "downloading the dashboard tables")
    report = dashboard_report(state, query, user)
    archive = state.export_path("dashboard", ".zip")
    with tempfile.TemporaryDirectory() as tmp:
        zip_tables(write_tables(report, Path(tmp)), archive)
    return archive
