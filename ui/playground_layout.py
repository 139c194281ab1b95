"""The Playground tab's layout: its sections, each returning its components by name."""

from dataclasses import dataclass

import gradio as gr

from playground.core.limits import MAX_RESPONSES
from playground.inference.settings import GenerationSettings
from service.state import AppState
from service.voting import slot_choices
from ui.render import LETTERS, slot_label
from ui.voting import PAIR_VOTES, thumb_buttons

SIDE_BY_SIDE, ANONYMOUS = "Side by side", "Anonymous battle"
DEFAULTS = GenerationSettings()
DEFAULT_SLOTS = ("policy", "reference", "sft", "policy")


@dataclass(frozen=True)
class RoundSettings:
    """What a round is generated from, and the buttons that start and stop it."""

    mode: gr.Radio
    k: gr.Slider
    beta: gr.Number
    slot_models: tuple[gr.Dropdown, ...]
    system: gr.Textbox
    prompt: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    max_new: gr.Slider
    repetition: gr.Slider
    seed: gr.Number
    go: gr.Button
    regen: gr.Button
    stop: gr.Button

    @property
    def inputs(self) -> list[gr.components.Component]:
        """`/generate`'s inputs, in the order of its parameters (`ui.playground_round.RoundRequest`)."""
        return [self.prompt, self.system, self.k, self.mode, *self.slot_models, self.temperature, self.top_p,
                self.top_k, self.max_new, self.repetition, self.seed, self.beta]


@dataclass(frozen=True)
class ResponseViews:
    """One column per response slot: heading, text, 👍/👎, scores and per-token view; then the
    preference table under them."""

    columns: tuple[gr.Column, ...]
    headers: tuple[gr.Markdown, ...]
    texts: tuple[gr.Textbox, ...]
    thumbs: tuple[dict[str, gr.Button], ...]  # slot -> {"up": button, "down": button}
    scores: tuple[gr.Markdown, ...]
    tokens: tuple[gr.HTML, ...]
    prefs: gr.Markdown

    @property
    def shown(self) -> list[gr.components.Component]:
        """What `ui.playground_round.round_view` fills in (and `/round` returns), in this order."""
        return [*self.headers, *self.texts, *self.scores, *self.tokens, self.prefs]

    @property
    def thumb_buttons(self) -> list[gr.Button]:
        return [b for pair in self.thumbs for b in pair.values()]


@dataclass(frozen=True)
class VoteControls:
    pair_row: gr.Row
    pair_buttons: dict[str, gr.Button]  # outcome -> button
    rank_row: gr.Row
    ranking: gr.Dropdown
    rank_button: gr.Button
    skip: gr.Button

    @property
    def buttons(self) -> list[gr.Button]:
        """Every button that closes the round: the pairwise votes, the ranking, Skip."""
        return [*self.pair_buttons.values(), self.rank_button, self.skip]


@dataclass(frozen=True)
class PlaygroundPage:
    settings: RoundSettings
    views: ResponseViews
    votes: VoteControls
    round: gr.State  # the session's current Round, None before the first
    status: gr.Markdown


def build_playground_page(state: AppState) -> PlaygroundPage:
    settings = settings_section(state)
    status = gr.Markdown("")
    views = responses_section()
    votes = votes_section()
    return PlaygroundPage(settings, views, votes, gr.State(None), status)


def settings_section(state: AppState) -> RoundSettings:
    catalog = list(state.slot_catalog())
    choices = slot_choices(state)  # a fresh policy is labelled as the SFT model it equals
    with gr.Row():
        mode = gr.Radio([SIDE_BY_SIDE, ANONYMOUS], value=SIDE_BY_SIDE, label="Mode", scale=2)
        k = gr.Slider(2, MAX_RESPONSES, value=2, step=1, label="Responses k", scale=1)
        beta = gr.Number(value=state.beta, label="β in r = β·log(π_θ/π_ref)", minimum=1e-6, scale=1)
    with gr.Row():
        slot_models = tuple(gr.Dropdown(choices, value=DEFAULT_SLOTS[i] if DEFAULT_SLOTS[i] in catalog else catalog[0],
                                        label=f"Model for {LETTERS[i]}", visible=i < 2, elem_id=f"model-{i}")
                            for i in range(MAX_RESPONSES))
    system = gr.Textbox(label="System prompt (optional)", lines=1)
    prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Ask something…", elem_id="prompt")
    with gr.Accordion("Generation settings", open=False):
        with gr.Row():
            temperature = gr.Slider(0, 2, value=DEFAULTS.temperature, step=0.05, label="Temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1, value=DEFAULTS.top_p, step=0.05, label="Top-p")
            top_k = gr.Slider(0, 200, value=DEFAULTS.top_k, step=1, label="Top-k (0 = off)")
        with gr.Row():
            max_new = gr.Slider(1, 1024, value=DEFAULTS.max_new_tokens, step=1, label="Max new tokens")
            repetition = gr.Slider(0.5, 2, value=DEFAULTS.repetition_penalty, step=0.05, label="Repetition penalty")
            seed = gr.Number(value=DEFAULTS.seed, precision=0, label="Seed", minimum=0, elem_id="seed")
    with gr.Row():
        go = gr.Button("Generate", variant="primary", elem_id="generate")
        regen = gr.Button("Regenerate (new seed)", elem_id="regenerate")
        stop = gr.Button("Stop", variant="stop", elem_id="stop")
    return RoundSettings(mode, k, beta, slot_models, system, prompt, temperature, top_p, top_k, max_new, repetition,
                         seed, go, regen, stop)


def responses_section() -> ResponseViews:
    columns, headers, texts, thumbs, scores, tokens = [], [], [], [], [], []
    with gr.Row(equal_height=False):
        for i in range(MAX_RESPONSES):
            with gr.Column(visible=i < 2) as column:
                headers.append(gr.Markdown(f"### {slot_label(i)}", elem_id=f"header-{i}"))
                texts.append(gr.Textbox(show_label=False, lines=8, max_lines=20, interactive=False,
                                        elem_id=f"response-{i}"))
                with gr.Row():
                    thumbs.append(thumb_buttons("", i))
                scores.append(gr.Markdown(elem_id=f"scores-{i}"))
                with gr.Accordion("Per-token log-ratio", open=False):
                    tokens.append(gr.HTML())
            columns.append(column)
    prefs = gr.Markdown(elem_id="preferences")
    return ResponseViews(tuple(columns), tuple(headers), tuple(texts), tuple(thumbs), tuple(scores), tuple(tokens),
                         prefs)


def votes_section() -> VoteControls:
    with gr.Row(visible=True) as pair_row:
        pair_buttons = {o: gr.Button(label, interactive=False, elem_id=f"vote-{o}") for o, label in PAIR_VOTES.items()}
    with gr.Row(visible=False) as rank_row:
        ranking = gr.Dropdown(list(LETTERS), multiselect=True, label="Your ranking: pick responses best → worst",
                              scale=3)
        rank_button = gr.Button("Submit ranking", interactive=False, elem_id="vote-ranking")
    skip = gr.Button("Skip (no vote)", interactive=False, elem_id="skip")
    return VoteControls(pair_row, pair_buttons, rank_row, ranking, rank_button, skip)


def slots_view(page: PlaygroundPage, k_value: float, mode_value: str) -> dict:
    """The columns, model pickers and vote rows for k responses (two in an anonymous battle)."""
    n = 2 if mode_value == ANONYMOUS else int(k_value)
    side_by_side = mode_value != ANONYMOUS
    return {
        **{c: gr.Column(visible=i < n) for i, c in enumerate(page.views.columns)},
        **{d: gr.Dropdown(visible=side_by_side and i < n) for i, d in enumerate(page.settings.slot_models)},
        page.votes.pair_row: gr.Row(visible=n == 2),
        page.votes.rank_row: gr.Row(visible=n > 2),
        page.votes.ranking: gr.Dropdown(value=[]),
        page.settings.k: gr.Slider(interactive=side_by_side),
    }

