"""The Gradio Blocks app. Each event handler is a small function calling the engine."""

import gradio as gr

from playground.app_state import AppState
from playground.generation import GenerationSettings, stream_generate


def build_demo(state: AppState) -> gr.Blocks:
    roles = list(state.slot_choices())

    def chat(message: str, system: str, role: str, max_new_tokens: int):
        if not message.strip():
            raise gr.Error("Type a prompt first.")
        messages = ([{"role": "system", "content": system}] if system.strip() else []) + [
            {"role": "user", "content": message}]
        settings = GenerationSettings(temperature=0, max_new_tokens=int(max_new_tokens))
        for texts in stream_generate(state.models, [state.slot_choices()[role]], messages, settings):
            yield texts[0]

    with gr.Blocks(title="Preference Playground") as demo:
        gr.Markdown("# Preference Playground")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", lines=3, scale=4)
            with gr.Column(scale=1):
                role = gr.Dropdown(roles, value="policy", label="Model")
                max_new = gr.Slider(1, 512, value=128, step=1, label="Max new tokens")
        system = gr.Textbox(label="System prompt (optional)")
        go = gr.Button("Generate", variant="primary")
        reply = gr.Textbox(label="Reply", lines=6)
        go.click(chat, [prompt, system, role, max_new], reply, api_name="chat", concurrency_id="model")
    return demo
