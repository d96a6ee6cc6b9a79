"""Typed records every loader produces and every trainer consumes.

A `Message` list is the one conversational form; text layouts on the hub are converted to it on load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Message", "Conversation", "PreferencePair", "Prompt", "ROLES"]

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Conversation:
    """An SFT example: the loss covers the assistant turns only."""

    messages: tuple[Message, ...]
    source: str = ""  # where it came from ("file.jsonl:12"), for error messages


@dataclass(frozen=True)
class PreferencePair:
    """A shared prompt (ending with a user turn) and two assistant replies, chosen preferred."""

    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    margin: float | None = None
    source: str = ""


@dataclass(frozen=True)
class Prompt:
    """A prompt to generate from (evals, rollouts, red teaming)."""

    messages: tuple[Message, ...]
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict, hash=False, compare=False)
