"""The reward interface: (prompts, completions, meta) -> one score per completion, plus combinations.

A reward function is any callable with a `name` that returns a `RewardResult`; reward models, AI judges
and Python rules all fit, and `WeightedReward` sums several (e.g. a harmlessness judge plus a helpfulness
reward model). Scores are plain floats so rules never need torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from alignkit.generate.base import Chat

__all__ = ["RewardResult", "RewardFn", "WeightedReward", "prompt_text"]


@dataclass
class RewardResult:
    scores: list[float]  # one per completion
    disagreement: list[float] | None = None  # ensemble spread per completion (reward models)
    parts: dict[str, list[float]] = field(default_factory=dict)  # per-component scores, for metrics


@runtime_checkable
class RewardFn(Protocol):
    name: str

    def __call__(self, prompts: Sequence[Chat], completions: Sequence[str],
                 meta: Sequence[Mapping[str, Any]]) -> RewardResult:
        """Score each completion of the matching prompt; `meta` carries per-prompt fields (e.g. the gold answer)."""
        ...


def prompt_text(chat: Chat) -> str:
    """The last user turn of a chat: what a rule or a judge reads as "the request"."""
    users = [m["content"] for m in chat if m.get("role") == "user"]
    return users[-1] if users else ""


class WeightedReward:
    """sum_k w_k * r_k(...) over components; `parts` keeps each component's own scores.

    The disagreement of the combination is the weighted sum of the members' disagreements (those that
    have one), i.e. the spread the combined reward inherits from its ensembles.
    """

    def __init__(self, components: Sequence[tuple[RewardFn, float]]) -> None:
        if not components:
            raise ValueError("a reward needs at least one component")
        self.components = list(components)
        self.name = "+".join(f"{w:g}*{fn.name}" if w != 1 else fn.name for fn, w in self.components)

    def __call__(self, prompts: Sequence[Chat], completions: Sequence[str],
                 meta: Sequence[Mapping[str, Any]]) -> RewardResult:
        total = [0.0] * len(completions)
        spread: list[float] | None = None
        parts: dict[str, list[float]] = {}
        for fn, weight in self.components:
            result = fn(prompts, completions, meta)
            if len(result.scores) != len(completions):
                raise ValueError(f"reward {fn.name!r} returned {len(result.scores)} scores for "
                                 f"{len(completions)} completions")
            total = [t + weight * s for t, s in zip(total, result.scores)]
            parts[_unique(parts, fn.name)] = list(result.scores)
            if result.disagreement is not None:
                spread = [(spread[i] if spread else 0.0) + abs(weight) * d for i, d in enumerate(result.disagreement)]
        return RewardResult(scores=total, disagreement=spread, parts=parts)


def _unique(taken: Mapping[str, Any], name: str) -> str:
    key, k = name, 2
    while key in taken:
        key, k = f"{name}#{k}", k + 1
    return key
