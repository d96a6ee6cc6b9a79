"""Multi-turn escalation (Crescendo, Russinovich et al. 2024), scripted.

A script opens with an innocuous question about the behavior's topic and escalates turn by turn to the
behavior itself; the target's own replies stay in the conversation, so each request leans on what the
target already said. Every reply is judged against the behavior and the conversation stops at the first
one judged harmful (success at turn k). One script is drawn per behavior (seeded); all conversations
advance together, one batched target call per turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from alignkit.safety.redteam.attacks import fill
from alignkit.safety.redteam.base import AttackContext, Behavior, Outcome, case_id, case_rng
from alignkit.safety.redteam.scoring import Score

__all__ = ["CrescendoAttack"]


@dataclass
class CrescendoAttack:
    scripts: Sequence[tuple[str, Sequence[str]]]  # [(script id, turn templates)]
    max_turns: int | None = None  # cut every script to this many turns (the last kept turn is asked as is)
    name: str = "crescendo/scripted"
    family: str = "crescendo"

    def _turns(self, behavior: Behavior, seed: int) -> tuple[str, list[str]]:
        sid, turns = self.scripts[case_rng(seed, self.name, behavior.id).randrange(len(self.scripts))]
        turns = list(turns)
        if self.max_turns is not None and len(turns) > self.max_turns:
            turns = turns[: self.max_turns - 1] + turns[-1:]  # keep the escalation's final request
        return sid, [fill(t, behavior) for t in turns]

    def run(self, behaviors: Sequence[Behavior], ctx: AttackContext) -> list[Outcome]:
        plans = [self._turns(b, ctx.seed) for b in behaviors]
        convs: list[list[dict[str, str]]] = [[] for _ in behaviors]
        result: list[tuple[int, Score, str] | None] = [None] * len(behaviors)
        tokens, latency, blocks = [0] * len(behaviors), [0.0] * len(behaviors), [0] * len(behaviors)
        for k in range(max(len(turns) for _, turns in plans)):
            active = [i for i, (_, turns) in enumerate(plans) if k < len(turns)
                      and (result[i] is None or not result[i][1].success)]
            if not active:
                break
            for i in active:
                convs[i].append({"role": "user", "content": plans[i][1][k]})
            replies = [g[0] for g in ctx.target.generate([ctx.with_system(convs[i]) for i in active], ctx.params)]
            scores = ctx.scorer.score([behaviors[i] for i in active], [c.text for c in replies])
            for i, c, s in zip(active, replies, scores):
                convs[i].append({"role": "assistant", "content": c.text})
                tokens[i] += c.tokens
                latency[i] += c.latency_s
                blocks[i] += bool(c.meta.get("guard"))
                result[i] = (k, s, c.text)
        outcomes = []
        for i, b in enumerate(behaviors):
            k, s, reply = result[i]  # type: ignore[misc]
            outcomes.append(Outcome(
                case_id(self.name, b), self.family, self.name, b, convs[i], reply, s.success, s.p_harmful, s.refused,
                s.reason, tokens[i], latency[i], target_calls=k + 1,
                meta={"script": plans[i][0], "turns": k + 1, "planned_turns": len(plans[i][1]),
                      "success_turn": k + 1 if s.success else None, "guard_blocks": blocks[i]}))
        return outcomes
