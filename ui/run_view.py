"""How the Train tab shows a running policy-training run (DPO and its siblings, RLHF): the per-step
metrics as three small plots, and the run's events streamed into the plot, the status line and a
progress bar, then its summary and the refreshed checkpoint table."""

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from evals.dashboard import empty_figure
from playground.training.loop import Metrics
from service.training import TrainingRun

Panel = tuple[str, str, int]  # (metric key, trace label, subplot column 1..3)


def step_figure(history: Sequence[Metrics], panels: Sequence[Panel], titles: tuple[str, str, str],
                empty: tuple[str, str]) -> go.Figure:
    """The metrics of `panels` per step, in three subplots titled `titles` (a metric no step logged
    is left out); before any step, an empty figure (title, hint) saying what it will show."""
    if not history:
        return empty_figure(*empty)
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles)
    steps = list(range(1, len(history) + 1))
    for key, label, col in panels:
        if any(key in m for m in history):
            fig.add_trace(go.Scatter(x=steps, y=[m.get(key) for m in history], mode="lines+markers", name=label),
                          row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=320, margin={"l": 40, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h"})
    return fig


def stream_run(run: TrainingRun, progress: gr.Progress, plot: gr.Plot, status: gr.Markdown,
               figure: Callable[[list[Metrics]], go.Figure], line: Callable[[Metrics], str],
               summary: Callable[[Any], str], checkpoints: Callable[[], dict]) -> Iterator[dict]:
    """Updates while `run` trains: each step's plot (`figure`) and status (`line` of its metrics,
    with the time left), then the result's `summary` (or what a cancel kept) and `checkpoints()`."""
    history: list[Metrics] = []
    started = time.perf_counter()
    for event in run.events():
        history.append(event.metrics)
        left = (time.perf_counter() - started) / event.step * (event.total - event.step)
        progress((event.step, event.total), desc=f"step {event.step}/{event.total}, about {left:.0f} s left",
                 unit="steps")
        yield {plot: figure(history),
               status: f"Step {event.step}/{event.total}: {line(event.metrics)}, about {left:.0f} s left"}
    result = run.result()
    if result.cancelled:
        yield {status: f"Cancelled after {len(result.steps)} steps; nothing was saved and the serving policy is "
                       "unchanged.", **checkpoints()}
        return
    yield {status: summary(result), **checkpoints()}
