"""What a generation is asked for and how each response ended: sampling settings (with the reasons
they bias a KL estimate), end-of-turn ids, and the chat-templated prompt ids every slot continues."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from playground.core.chat import Message
from playground.core.errors import PlaygroundError
from playground.core.limits import MAX_NEW_TOKENS
from playground.models.roles import Models

# How a response ended: by itself (an end-of-turn token was sampled), cut at max new tokens, or by Stop.
ENDED, CUT, STOPPED = "end of turn", "cut at max new tokens", "stopped"


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.9
    top_k: int = 50  # 0 disables top-k
    max_new_tokens: int = 128
    repetition_penalty: float = 1.0
    seed: int = 0

    def validate(self) -> "GenerationSettings":
        checks = [
            (0 <= self.temperature <= 5, "temperature must be between 0 and 5"),
            (0 < self.top_p <= 1, "top-p must be in (0, 1]"),
            (0 <= self.top_k <= 10_000, "top-k must be between 0 and 10000"),
            (1 <= self.max_new_tokens <= MAX_NEW_TOKENS, f"max new tokens must be 1..{MAX_NEW_TOKENS}"),
            (0.5 <= self.repetition_penalty <= 5, "repetition penalty must be between 0.5 and 5"),
            (0 <= self.seed < 2**63, "seed must be a non-negative integer"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise PlaygroundError("; ".join(problems))
        return self

    def sampling_bias(self) -> list[str]:
        """Why a response sampled with these settings is not a sample of the model's own
        distribution (so Σ log-ratio over it is no unbiased KL estimate); empty when it is."""
        if self.temperature == 0:
            reasons = ["greedy (T = 0)"]
        else:
            reasons = [f"T = {self.temperature:g}"] if self.temperature != 1 else []
            reasons += [f"top-p {self.top_p:g}"] if self.top_p < 1 else []
            reasons += [f"top-k {self.top_k}"] if self.top_k > 0 else []
        reasons += [f"repetition penalty {self.repetition_penalty:g}"] if self.repetition_penalty != 1 else []
        return reasons

    def generate_kwargs(self) -> dict:
        sampling = self.temperature > 0
        kwargs: dict = {"max_new_tokens": self.max_new_tokens, "do_sample": sampling,
                        "repetition_penalty": self.repetition_penalty}
        if sampling:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # silence the model's default sampling parameters under greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


def prompt_ids(models: Models, messages: Sequence[Message]) -> torch.Tensor:
    out = models.tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    return out["input_ids"]  # (1, T)


def eos_ids(models: Models) -> list[int]:
    """Token ids that end a response: the generation config's EOS (one or several) and the tokenizer's."""
    eos = models.policy.model.generation_config.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return [i for i in [*ids, models.tokenizer.eos_token_id] if i is not None]
