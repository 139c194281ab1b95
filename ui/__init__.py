"""The Gradio layer: builds pages and wires events to engine calls. No engine logic lives here."""
