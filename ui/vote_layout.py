"""The Vote tab's layout: the prompt-set picker with its guidelines, and the queue item on screen."""

from dataclasses import dataclass

import gradio as gr

from playground.core.limits import MAX_RESPONSES
from service import prompt_sets
from service.state import AppState
from ui.render import LETTERS
from ui.voting import PAIR_VOTES, thumb_buttons

NO_SET_ADMIN = ("**No prompt set yet.** Load the shipped example set with the button, or import "
                "your own in the admin panel below; then choose the models it compares.")
NO_SET_VOTER = ("**No prompt set yet.** An admin adds one: in the admin panel of this tab, or on the command "
                "line with `playground data prompts FILE --name NAME`. Come back when it is there.")


@dataclass(frozen=True)
class SetPicker:
    set_pick: gr.Dropdown
    refresh: gr.Button
    no_set: gr.Markdown  # what to do while there is no set: the admin's or a voter's version
    example_button: gr.Button
    guidelines: gr.Markdown
    guidelines_box: gr.Textbox
    guidelines_button: gr.Button


@dataclass(frozen=True)
class QueueView:
    """The queue item on screen: prompt, responses in random order, votes, Skip and Next."""

    current: gr.State  # the QueueItem on screen; None once voted on, so it cannot be voted on twice
    skipped: gr.State  # prompt ids skipped in this browser session; a new session sees them again
    progress: gr.Markdown
    prompt: gr.Markdown
    columns: tuple[gr.Column, ...]
    headers: tuple[gr.Markdown, ...]
    texts: tuple[gr.Textbox, ...]
    thumbs: tuple[dict[str, gr.Button], ...]  # slot -> {"up": button, "down": button}
    pair_buttons: dict[str, gr.Button]  # outcome -> button
    ranking: gr.Dropdown
    rank_button: gr.Button
    flawed_button: gr.Button
    skip: gr.Button
    next_button: gr.Button
    status: gr.Markdown

    @property
    def thumb_buttons(self) -> list[gr.Button]:
        return [b for pair in self.thumbs for b in pair.values()]

    @property
    def shown(self) -> list[gr.components.Component]:
        """What `ui.vote_tab.item_view` fills in with the status, in the order of `/next_item`'s outputs."""
        return [self.status, self.progress, self.prompt, *self.columns, *self.headers, *self.texts,
                *self.pair_buttons.values(), self.ranking, self.rank_button, self.flawed_button, self.skip,
                self.current, *self.thumb_buttons]


def set_section(state: AppState) -> SetPicker:
    names = prompt_sets.set_names(state)
    with gr.Row():
        # Custom values allowed: a set imported after the page was built is still a valid choice.
        set_pick = gr.Dropdown(names, value=names[0] if names else None, label="Prompt set",
                               allow_custom_value=True, scale=3, elem_id="queue-set")
        refresh = gr.Button("Refresh sets", scale=0)
    # As a page without logins shows it; with logins, the tab fills in the caller's role on opening.
    no_set = gr.Markdown(NO_SET_VOTER if state.access.enabled else NO_SET_ADMIN, visible=not names,
                         elem_id="queue-no-set")
    example_button = gr.Button("Load the example prompt set", variant="primary",
                               visible=not names and not state.access.enabled, elem_id="queue-load-example")
    guidelines = gr.Markdown(elem_id="queue-guidelines")
    with gr.Accordion("Edit the guidelines (admin)", open=False):
        guidelines_box = gr.Textbox(label="Guidelines (Markdown)", lines=8)
        guidelines_button = gr.Button("Save guidelines")
    return SetPicker(set_pick, refresh, no_set, example_button, guidelines, guidelines_box, guidelines_button)


def item_section() -> QueueView:
    progress, prompt = gr.Markdown(), gr.Markdown()
    headers, texts, columns, thumbs = [], [], [], []
    with gr.Row(equal_height=False):
        for i in range(MAX_RESPONSES):
            # The columns come and go with k, so two responses share the full width.
            with gr.Column(min_width=200, visible=False) as column:
                headers.append(gr.Markdown(visible=False))
                texts.append(gr.Textbox(show_label=False, lines=8, max_lines=20, interactive=False, visible=False,
                                        elem_id=f"queue-response-{i}"))
                with gr.Row():
                    thumbs.append(thumb_buttons("queue-", i))
            columns.append(column)
    with gr.Row():
        pair_buttons = {o: gr.Button(label, interactive=False, elem_id=f"queue-{o}") for o, label in PAIR_VOTES.items()}
    with gr.Row():
        ranking = gr.Dropdown(list(LETTERS), multiselect=True, label="Your ranking: pick the responses best → worst",
                              visible=False, scale=3)
        rank_button = gr.Button("Submit ranking", interactive=False, visible=False, elem_id="queue-ranking")
        flawed_button = gr.Button("All flawed", interactive=False, visible=False, elem_id="queue-all_flawed")
    with gr.Row():
        skip = gr.Button("Skip (S)", interactive=False, elem_id="queue-skip")
        next_button = gr.Button("Next prompt (Enter)", variant="primary", elem_id="queue-next")
    status = gr.Markdown()
    return QueueView(gr.State(None), gr.State(()), progress, prompt, tuple(columns), tuple(headers), tuple(texts),
                     tuple(thumbs), pair_buttons, ranking, rank_button, flawed_button, skip, next_button, status)
