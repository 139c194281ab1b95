"""Deterministic synthetic preference pairs of realistic, varied lengths for the benchmarks."""

import random

WORDS = [
    "the",
    "model",
    "answer",
    "question",
    "because",
    "data",
    "training",
    "reward",
    "policy",
    "reference",
    "token",
    "sequence",
    "value",
    "people",
    "prefer",
    "short",
    "clear",
    "helpful",
    "wrong",
    "right",
    "example",
    "compare",
    "better",
    "worse",
    "simple",
    "explain",
    "why",
    "first",
    "second",
    "then",
    "finally",
    "result",
    "number",
    "language",
    "learning",
    "python",
    "code",
    "function",
    "return",
]


def sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def chat_pairs(n: int, seed: int = 0, max_words: int = 90) -> list[tuple[list, list, list]]:
    """(prompt, chosen, rejected) conversational triples; prompts 8–40 words, answers 5–`max_words`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [{"role": "user", "content": sentence(rng, rng.randint(8, 40))}]
        chosen = [{"role": "assistant", "content": sentence(rng, rng.randint(5, max_words))}]
        rejected = [{"role": "assistant", "content": sentence(rng, rng.randint(5, max_words))}]
        out.append((prompt, chosen, rejected))
    return out
