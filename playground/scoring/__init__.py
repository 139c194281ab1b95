"""Scoring: token encoding as TRL does it, per-sequence log-probs, pairs, and a playground round's scores and vote."""
