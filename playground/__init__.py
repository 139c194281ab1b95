"""Preference Playground engine: models, scoring, generation, votes and DPO training.

Nothing in this package imports Gradio; the UI (`ui/`), the CLIs and the tests call it the same way.
"""
