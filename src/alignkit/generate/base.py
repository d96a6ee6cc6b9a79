"""The one generation interface: chat messages in, completions out.

Evals, judges, guard rails, the server and the trainers' rollouts all talk to a `Generator`, so a
local transformers model, an OpenAI-compatible endpoint or vLLM can stand behind any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

__all__ = ["Chat", "SamplingParams", "Completion", "Generator"]

Chat = Sequence[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}, ...]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n: int = 1  # completions per conversation
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    logprobs: bool = False  # per-token log-probs of the generated tokens

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 with temperature 0 would return n identical completions; set temperature > 0")


@dataclass
class Completion:
    text: str
    tokens: int  # generated tokens
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    token_logprobs: list[float] | None = None
    prompt_tokens: int = 0
    latency_s: float = 0.0
    meta: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Generator(Protocol):
    """Anything that turns conversations into completions."""

    name: str

    def generate(self, chats: Sequence[Chat], params: SamplingParams = SamplingParams()) -> list[list[Completion]]:
        """`params.n` completions for each chat (outer list aligned with `chats`)."""
        ...

    def choice_logprobs(self, chats: Sequence[Chat], choices: Sequence[str]) -> list[list[float]]:
        """Log-probability that the assistant reply to each chat starts with each choice string.

        Used by judges (" A" vs " B", "1".."10") and multiple-choice evals. Backends that cannot score
        arbitrary continuations raise NotImplementedError with a clear message.
        """
        ...
