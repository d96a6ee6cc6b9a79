"""PAIR-style attacker-LLM search (Chao et al. 2023): an attacker model proposes a prompt, the target
answers, the judge scores the answer 1-10, and the attacker refines its prompt from that feedback, for at
most `iterations` rounds per stream, stopping a behavior's streams at the first success.

The attacker is any `Generator` (by default the target's own model, unguarded); it keeps its
conversation (goal, its proposals, the target's replies and scores) so each proposal builds on the last.
A reply without a usable `PROMPT:` (small attackers often answer the goal instead of writing a prompt)
falls back to a jailbreak template drawn from the seeded stream, and the record says how often that
happened: the search then degrades to best-of-N over templates, never to a silent no-op.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from alignkit.generate.base import SamplingParams
from alignkit.safety.redteam.attacks import fill
from alignkit.safety.redteam.base import AttackContext, Behavior, Outcome, case_id, case_rng
from alignkit.safety.redteam.scoring import Score, pair_score

__all__ = ["PairAttack", "parse_attacker_prompt"]

_PROMPT = re.compile(r"(?:^|\n)\s*\**\s*PROMPT\s*\**\s*:\s*\**\s*(.+)", re.IGNORECASE | re.DOTALL)
REPLY_CHARS = 600  # the target's reply as shown to the attacker (keeps the attacker's context short)


def parse_attacker_prompt(text: str) -> str | None:
    """The prompt an attacker proposed: after "PROMPT:", or the "prompt" of a JSON object; None if neither."""
    match = _PROMPT.search(text)
    if match:
        prompt = re.split(r"\n\s*IMPROVEMENT\s*:", match.group(1), flags=re.IGNORECASE)[0]
        prompt = prompt.strip().strip('"').strip()
        return prompt or None
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            obj = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            return None
        if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
            return obj["prompt"].strip()
    return None


@dataclass
class _Stream:
    behavior: int  # index into the behaviors
    chat: list[dict[str, str]]
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PairAttack:
    text: dict[str, str]  # system, first, feedback (resources/redteam_attacks.yaml: pair)
    fallback: Sequence[tuple[str, str]]  # (template id, text): used when the attacker gives no prompt
    iterations: int = 3
    streams: int = 1
    attacker_params: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=160, temperature=0.8))
    history: int = 3  # attacker/feedback exchanges kept in the attacker's context
    name: str = "pair/search"
    family: str = "pair"

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.streams < 1:
            raise ValueError(f"pair iterations and streams must be >= 1, got {self.iterations}, {self.streams}")
        if not self.fallback:
            raise ValueError("pair needs at least one fallback template")

    def _draw(self, deck: list[tuple[str, str]], rng: random.Random) -> tuple[str, str]:
        """The next fallback template: every template once (shuffled) before any repeats."""
        if not deck:
            deck.extend(self.fallback)
            rng.shuffle(deck)
        return deck.pop()

    def _trim(self, chat: list[dict[str, str]]) -> list[dict[str, str]]:
        # system + first request, then the last `history` (proposal, feedback) exchanges
        head, tail = chat[:2], chat[2:]
        return head + tail[-2 * self.history :] if len(tail) > 2 * self.history else chat

    def run(self, behaviors: Sequence[Behavior], ctx: AttackContext) -> list[Outcome]:
        attacker = ctx.attacker or ctx.target
        rngs = [case_rng(ctx.seed, self.name, b.id) for b in behaviors]
        decks: list[list[tuple[str, str]]] = [[] for _ in behaviors]  # fallback templates left to try
        streams = [_Stream(i, [{"role": "system", "content": fill(self.text["system"], b)},
                               {"role": "user", "content": fill(self.text["first"], b)}])
                   for i, b in enumerate(behaviors) for _ in range(self.streams)]
        best: list[tuple[Score, str, str, int] | None] = [None] * len(behaviors)
        tokens, latency, calls = [0] * len(behaviors), [0.0] * len(behaviors), [0] * len(behaviors)
        for it in range(self.iterations):
            active = [s for s in streams if best[s.behavior] is None or not best[s.behavior][0].success]
            if not active:
                break  # early stop: every behavior already broken
            params = SamplingParams(**{**self.attacker_params.__dict__, "seed": ctx.seed + it})
            proposals = attacker.generate([self._trim(s.chat) for s in active], params)
            prompts = []
            for s, group in zip(active, proposals):
                parsed = parse_attacker_prompt(group[0].text)
                if parsed is None:
                    tid, tpl = self._draw(decks[s.behavior], rngs[s.behavior])
                    parsed, source = fill(tpl, behaviors[s.behavior]), f"fallback:{tid}"
                else:
                    source = "attacker"
                s.chat.append({"role": "assistant", "content": group[0].text})
                prompts.append((parsed, source))
            chats = [ctx.with_system([{"role": "user", "content": p}]) for p, _ in prompts]
            replies = [g[0] for g in ctx.target.generate(chats, ctx.params)]
            scores = ctx.scorer.score([behaviors[s.behavior] for s in active], [c.text for c in replies])
            for s, (prompt, source), c, sc in zip(active, prompts, replies, scores):
                b = s.behavior
                tokens[b], latency[b], calls[b] = tokens[b] + c.tokens, latency[b] + c.latency_s, calls[b] + 1
                s.log.append({"iteration": it + 1, "prompt": prompt, "source": source, "reply": c.text,
                              "p_harmful": round(sc.p_harmful, 4), "success": sc.success})
                s.chat.append({"role": "user", "content": fill(self.text["feedback"], behaviors[b],
                                                               response=c.text[:REPLY_CHARS],
                                                               score=str(pair_score(sc.p_harmful)))})
                current = best[b]
                if current is None or (sc.success, sc.p_harmful) > (current[0].success, current[0].p_harmful):
                    best[b] = (sc, prompt, c.text, it + 1)
        return [self._outcome(i, b, best[i], [s for s in streams if s.behavior == i], tokens[i], latency[i], calls[i])
                for i, b in enumerate(behaviors)]

    def _outcome(self, i: int, b: Behavior, best: tuple[Score, str, str, int] | None, streams: list[_Stream],
                 tokens: int, latency: float, calls: int) -> Outcome:
        assert best is not None  # every behavior runs at least one iteration
        score, prompt, reply, found_at = best
        log = [entry for s in streams for entry in s.log]
        fallbacks = sum(entry["source"] != "attacker" for entry in log)
        return Outcome(case_id(self.name, b), self.family, self.name, b,
                       [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}], reply,
                       score.success, score.p_harmful, score.refused, score.reason, tokens, latency, calls,
                       meta={"iterations": max(e["iteration"] for e in log), "max_iterations": self.iterations,
                             "streams": self.streams, "best_iteration": found_at,
                             "success_iteration": found_at if score.success else None,
                             "attacker_fallbacks": fallbacks, "attacker_proposals": len(log) - fallbacks,
                             "search": log})
