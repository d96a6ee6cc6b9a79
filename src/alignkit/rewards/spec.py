"""Rewards in a recipe: a list of typed `RewardSpec`s, built into one `WeightedReward`.

    rewards:
      - {kind: rule, name: gsm8k_answer}                                  # verifiable answer
      - {kind: rule, name: regex, weight: 0.2, options: {pattern: "answer is -?[0-9]"}}   # format
      - {kind: model, name: runs/rm/final, ensemble: [runs/rm-seed1/final]}               # reward models
      - {kind: judge, name: smollm2-135m-instruct, options: {question: "Is the response harmless?"}}

Importing this module imports no torch (the CLI's --help reads the config classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

__all__ = ["RewardSpec", "build_reward", "build_one"]


@dataclass
class RewardSpec:
    kind: Literal["rule", "model", "judge"] = field(default="rule", metadata={"help": "rule (Python), model (reward model dir), judge (a Generator's P(yes))"})
    name: str = field(default="", metadata={"help": "rule name (gsm8k_answer, regex, length), reward-model directory, or judge model name"})
    weight: float = field(default=1.0, metadata={"help": "weight in the sum of rewards"})
    ensemble: list[str] = field(default_factory=list, metadata={"help": "kind=model: more reward-model directories; the reward is their mean, their spread is logged"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "rule options (e.g. pattern, max_chars), or judge options (question)"})

    def validate(self) -> None:
        if not self.name:
            raise ValueError("name is required (a rule name, a reward-model directory or a judge model)")
        if self.ensemble and self.kind != "model":
            raise ValueError("ensemble applies to kind=model only")
        if self.kind == "rule":
            from alignkit.rewards.rules import RULES

            if self.name not in RULES:
                raise ValueError(f"unknown rule {self.name!r}; available: {', '.join(sorted(RULES))}")


def build_one(spec: RewardSpec, device: str = "cpu") -> Any:
    """One reward function from its spec (loads models for kind=model / judge)."""
    if spec.kind == "rule":
        from alignkit.rewards.rules import make_rule

        return make_rule(spec.name, spec.options)
    if spec.kind == "model":
        from alignkit.rewards.model import RewardModelScorer

        return RewardModelScorer.load([spec.name, *spec.ensemble], device=device, **spec.options)
    if spec.kind == "judge":
        from alignkit.generate.local import LocalGenerator
        from alignkit.rewards.judge import JudgeReward

        options = dict(spec.options)
        return JudgeReward(LocalGenerator.load(spec.name, device=device), name=f"judge:{spec.name}", **options)
    raise ValueError(f"unknown reward kind {spec.kind!r}")


def build_reward(specs: Sequence[RewardSpec], device: str = "cpu") -> Any:
    """A `WeightedReward` over the specs (each built once)."""
    from alignkit.rewards.base import WeightedReward

    if not specs:
        raise ValueError("rewards is empty; give at least one (rule, model or judge)")
    return WeightedReward([(build_one(s, device), s.weight) for s in specs])
