"""Inference: token encoding as TRL does it, generation, per-sequence log-probs, playground rounds."""
