"""Inference: chat generation for response slots, and the one continuous batch every generation in the app runs in."""
