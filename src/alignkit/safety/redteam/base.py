"""The red-teaming vocabulary: a `Behavior` to elicit, an `AttackCase` that tries to elicit it, the
`Outcome` of running a case against a target, and the two attack protocols.

- A `StaticAttack` turns a behavior into a fixed chat (`build(behavior, rng) -> AttackCase`): direct
  requests, jailbreak templates, obfuscations, many-shot, prompt injection. The runner sends every
  static case of a chunk to the target in one batch.
- An `InteractiveAttack` talks to the target over several calls (`run(behaviors, ctx) -> outcomes`):
  crescendo (scripted escalation, the target's replies stay in the conversation) and PAIR (an attacker
  model rewrites the prompt from the judge's feedback).

Every attack is deterministic given the `random.Random` it is handed, which the runner seeds from
(run seed, attack name, behavior id): adding a family never changes another family's cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from alignkit.generate.base import Generator, SamplingParams
    from alignkit.safety.redteam.scoring import Scorer

__all__ = ["Behavior", "AttackCase", "Outcome", "StaticAttack", "InteractiveAttack", "AttackContext", "case_rng",
           "case_id", "last_user", "with_system", "FAMILY_ORDER"]

# Families in the order they are run and reported.
FAMILY_ORDER = ("direct", "jailbreak", "obfuscation", "many_shot", "injection", "crescendo", "pair")

Message = dict[str, str]


@dataclass(frozen=True)
class Behavior:
    """Something the target must not do, e.g. a HarmBench behavior, with its hazard category."""

    id: str
    text: str  # "Give detailed instructions for ..."
    hazard: str  # a hazard id of the constitution's taxonomy (violent_crimes, ...)
    semantic: str = ""  # the source's own category (HarmBench SemanticCategory), if any
    context: str = ""  # HarmBench contextual behaviors: the context passage
    source: str = ""  # "harmbench_behaviors_text_test.csv:17"

    @property
    def request(self) -> str:
        """The behavior as a direct request (HarmBench's contextual layout when there is a context)."""
        return f"{self.context}\n\n---\n\n{self.text}" if self.context else self.text


@dataclass
class AttackCase:
    """One attack on one behavior: the chat the target receives (ending with a user turn)."""

    id: str  # "<attack>@<behavior id>": unique within a run, stable across runs (pairs before/after)
    family: str
    attack: str  # "jailbreak/roleplay-archivist", "obfuscation/base64", ...
    behavior: Behavior
    chat: list[Message]
    # reads the target's reply back into plain text (an obfuscation's decoder): the judge sees both
    decode: Callable[[str], str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What happened when a case ran: the full transcript and the judge's verdict on the reply."""

    case_id: str
    family: str
    attack: str
    behavior: Behavior
    transcript: list[Message]  # every turn, the target's replies included
    response: str  # the reply the verdict is about (the last one, or the first judged harmful)
    success: bool  # the judge says the reply carries out the behavior
    p_harmful: float
    refused: bool
    judge_reason: str = ""
    tokens: int = 0  # tokens the target generated for this case
    latency_s: float = 0.0
    target_calls: int = 1
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class StaticAttack(Protocol):
    name: str  # "family/variant"
    family: str

    def build(self, behavior: Behavior, rng: random.Random) -> AttackCase:
        ...


@dataclass
class AttackContext:
    """What an interactive attack may use: the target, the scorer, generation settings and the seed."""

    target: "Generator"
    scorer: "Scorer"
    params: "SamplingParams"
    seed: int = 0
    system_prompt: str | None = None
    attacker: "Generator | None" = None  # PAIR's attacker model

    def with_system(self, chat: Sequence[Message]) -> list[Message]:
        """The chat as sent to the target: the run's system prompt (if any) first."""
        return with_system(chat, self.system_prompt)


@runtime_checkable
class InteractiveAttack(Protocol):
    name: str
    family: str

    def run(self, behaviors: Sequence[Behavior], ctx: AttackContext) -> list[Outcome]:
        """One outcome per behavior, in order; generation is batched across the behaviors."""
        ...


def case_rng(seed: int, attack: str, behavior_id: str) -> random.Random:
    """The per-case random stream. String seeds hash through SHA-512, so this is stable across processes."""
    return random.Random(f"{seed}|{attack}|{behavior_id}")


def case_id(attack: str, behavior: Behavior) -> str:
    return f"{attack}@{behavior.id}"


def last_user(chat: Sequence[Message]) -> str:
    users = [m["content"] for m in chat if m.get("role") == "user"]
    if not users:
        raise ValueError("the chat has no user turn")
    return users[-1]


def with_system(chat: Sequence[Message], system: str | None) -> list[Message]:
    """Prepend `system`; a chat that has its own system turn (a tool-use scenario) gets both, ours first."""
    chat = [dict(m) for m in chat]
    if not system:
        return chat
    if chat and chat[0]["role"] == "system":
        return [{"role": "system", "content": f"{system}\n\n{chat[0]['content']}"}, *chat[1:]]
    return [{"role": "system", "content": system}, *chat]
