"""AI judges over the `Generator` protocol: pairwise preference with soft labels, and pointwise 1-10 scores.

Pairwise (RL-CAI, Bai et al. 2022; RLAIF, Lee et al. 2023): the judge sees the conversation, a comparison
question (a constitution principle or a rubric) and responses (A) and (B). The soft label is the
judge's probability of "A" normalised over {"A", "B"}, read from the log-probs of the choice tokens, so
no text is parsed. Each pair is judged in both orders and the two probabilities are averaged, which
cancels a constant position bias. Several principles per pair are ensembled (mean). With chain of
thought the judge first writes its reasoning; such probabilities are overconfident, so they are clamped
to [0.4, 0.6] as the CAI paper does.

Pointwise (d-RLAIF, Lee et al. 2023): the judge rates one response 1-10; the score is the
probability-weighted mean over the scale, and `scaled_reward` maps it to [-1, 1].

The math lives in small pure functions (tested against hand-computed numbers); the judge classes only
build prompts and batch calls.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from alignkit.feedback.constitution import Constitution, Principle
from alignkit.generate.base import Chat, Generator, SamplingParams

__all__ = [
    "soft_label", "order_average", "clamp_probability", "ensemble", "exclusive_prefix_probs",
    "expected_score", "scaled_reward", "logit",
    "Comparison", "PairJudgment", "PairwiseJudge", "PointwiseJudge", "PointScore", "render_conversation",
]

CHOICES = ("A", "B")
JUDGE_SYSTEM = "You are a careful, impartial judge of AI assistant responses."
_COT_FINAL = "So which response is better? Answer with the single letter A or B."


# ---- the math --------------------------------------------------------------------------------------


def soft_label(logp_a: float, logp_b: float) -> float:
    """P(A) = e^a / (e^a + e^b): the choice log-probs normalised over the two options.

    Computed as a sigmoid of the difference (stable for any magnitudes). Both -inf (neither choice seen,
    e.g. outside an HTTP server's top-k) gives nan: no signal, not a tie.
    """
    if logp_a == -math.inf and logp_b == -math.inf:
        return math.nan
    d = logp_a - logp_b
    return 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))


def order_average(p_a_given_first_at_a: float, p_a_given_second_at_a: float) -> float:
    """P(response 1 is better), averaged over both presentation orders.

    Order 1 shows response 1 as (A): P(1 better) = P(A). Order 2 shows response 2 as (A):
    P(1 better) = 1 - P(A). A judge that always favours (A) by a constant shift gets it cancelled.
    """
    return 0.5 * (p_a_given_first_at_a + (1.0 - p_a_given_second_at_a))


def clamp_probability(p: float, low: float = 0.4, high: float = 0.6) -> float:
    """Clamp a chain-of-thought judge's probability into [low, high] (CAI: CoT labels are overconfident)."""
    if not 0.0 <= low <= 0.5 <= high <= 1.0:
        raise ValueError(f"clamp bounds must satisfy 0 <= low <= 0.5 <= high <= 1, got ({low}, {high})")
    return p if math.isnan(p) else min(high, max(low, p))


def ensemble(probabilities: Sequence[float]) -> float:
    """Mean of the finite probabilities (one per principle); nan when none is finite."""
    finite = [p for p in probabilities if not math.isnan(p)]
    return sum(finite) / len(finite) if finite else math.nan


def logit(p: float, eps: float = 1e-6) -> float:
    """log(p / (1-p)): the Bradley-Terry reward difference implied by a preference probability."""
    p = min(1.0 - eps, max(eps, p))
    return math.log(p / (1.0 - p))


def exclusive_prefix_probs(choices: Sequence[str], logps: Sequence[float]) -> list[float]:
    """Probabilities that the reply is exactly each choice, not a longer choice it prefixes.

    Scoring "1" gives P(reply starts with "1"), which includes replies "10". Subtracting the mass of the
    longer choices that start with it ("10") leaves P(exactly "1"). Negative remainders (numerical
    noise) become 0.
    """
    probs = [math.exp(lp) if lp > -math.inf else 0.0 for lp in logps]
    out = []
    for i, c in enumerate(choices):
        longer = sum(probs[j] for j, other in enumerate(choices) if j != i and len(other) > len(c)
                     and other.startswith(c))
        out.append(max(0.0, probs[i] - longer))
    return out


def expected_score(scores: Sequence[float], probs: Sequence[float]) -> float:
    """Probability-weighted mean score, the probabilities renormalised over the scale; nan if all 0."""
    total = sum(probs)
    if total <= 0:
        return math.nan
    return sum(s * p for s, p in zip(scores, probs)) / total


def scaled_reward(score: float, low: float, high: float) -> float:
    """Map a score on [low, high] to [-1, 1] (d-RLAIF's reward)."""
    return 2.0 * (score - low) / (high - low) - 1.0


# ---- prompts ---------------------------------------------------------------------------------------


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15].rstrip() + " [...truncated]"


def render_conversation(messages: Chat, limit: int = 2000) -> str:
    """A conversation as "Human: ... / Assistant: ..." text for a judge prompt."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {_short(m['content'], limit)}" for m in messages)


def _pair_prompt(conversation: str, question: str, a: str, b: str, cot: bool) -> str:
    ending = ("Think step by step about which response is better, then state your conclusion."
              if cot else "Answer with the single letter A or B.")
    return (f"Consider the following conversation between a human and an AI assistant.\n\n{conversation}\n\n"
            f"Here are two possible next responses from the assistant.\n\n(A) {a}\n\n(B) {b}\n\n"
            f"{question}\n{ending}")


# ---- pairwise --------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One principle (or rubric), judged in one or both orders."""

    principle: str  # principle id, or "question" for a custom rubric
    p_ab: float  # P("A") with response 1 shown as (A) (clamped under CoT)
    p_ba: float | None = None  # P("A") with response 2 shown as (A); None when judged in one order
    rationales: tuple[str, ...] = ()

    @property
    def p_first(self) -> float:
        return self.p_ab if self.p_ba is None else order_average(self.p_ab, self.p_ba)

    @property
    def position_consistent(self) -> bool | None:
        """Did the decision survive the swap? None when judged once or a probability is exactly 0.5/nan."""
        if self.p_ba is None or math.isnan(self.p_ab) or math.isnan(self.p_ba) or 0.5 in (self.p_ab, self.p_ba):
            return None
        return (self.p_ab > 0.5) != (self.p_ba > 0.5)


@dataclass
class PairJudgment:
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def p_first(self) -> float:
        """P(response 1 is better): order-averaged, ensembled over principles; nan = no signal."""
        return ensemble([c.p_first for c in self.comparisons])

    @property
    def principles(self) -> list[str]:
        return [c.principle for c in self.comparisons]


class PairwiseJudge:
    """Soft pairwise preferences from a `Generator`'s choice log-probs (see the module docstring)."""

    def __init__(self, generator: Generator, constitution: Constitution | None = None, *,
                 principles: Sequence[str] = (), principles_per_comparison: int = 1, question: str | None = None,
                 both_orders: bool = True, cot: bool = False, cot_max_tokens: int = 128,
                 cot_clamp: tuple[float, float] = (0.4, 0.6), max_response_chars: int = 1500, seed: int = 0) -> None:
        if question is None and constitution is None:
            raise ValueError("give a constitution (its principles' comparison questions) or a question")
        self.generator, self.question, self.both_orders = generator, question, both_orders
        self.cot, self.cot_max_tokens, self.cot_clamp = cot, cot_max_tokens, tuple(cot_clamp)
        self.max_response_chars = max_response_chars
        clamp_probability(0.5, *self.cot_clamp)  # validates the bounds now, not mid-run
        pool: list[Principle] = []
        if question is None and constitution is not None:
            pool = [constitution.principle(p) for p in principles] if principles else list(constitution.principles)
        self.pool = pool
        self.k = max(1, min(principles_per_comparison, len(pool))) if pool else 1
        self.seed = seed

    @property
    def name(self) -> str:
        return getattr(self.generator, "name", type(self.generator).__name__)

    def _questions(self, *texts: str) -> list[tuple[str, str]]:
        """(principle id, comparison question) for one pair: k distinct principles, drawn with a seed
        derived from the pair's text, so a resumed or re-ordered run judges each pair the same way."""
        if not self.pool:
            return [("question", self.question or "")]
        digest = hashlib.sha256("\x1f".join(texts).encode()).hexdigest()[:16]
        rng = random.Random(f"{self.seed}:{digest}")
        return [(p.id, p.comparison) for p in rng.sample(self.pool, self.k)]

    def judge(self, prompts: Sequence[Chat], first: Sequence[str], second: Sequence[str],
              progress: Callable[[int], None] | None = None) -> list[PairJudgment]:
        """Judge response `first[i]` against `second[i]` for each prompt; one batched call per stage."""
        if not len(prompts) == len(first) == len(second):
            raise ValueError("prompts, first and second must have the same length")
        plan: list[tuple[int, str, bool, str]] = []  # (pair, principle id, swapped, user text)
        for i, (prompt, r1, r2) in enumerate(zip(prompts, first, second)):
            convo = render_conversation(prompt, self.max_response_chars)
            a, b = _short(r1, self.max_response_chars), _short(r2, self.max_response_chars)
            for pid, question in self._questions(convo, r1, r2):
                plan.append((i, pid, False, _pair_prompt(convo, question, a, b, self.cot)))
                if self.both_orders:
                    plan.append((i, pid, True, _pair_prompt(convo, question, b, a, self.cot)))
        probs, rationales = self._score([text for *_, text in plan])
        results = [PairJudgment() for _ in prompts]
        by_key: dict[tuple[int, str], Comparison] = {}
        for (i, pid, swapped, _), p, why in zip(plan, probs, rationales):
            comp = by_key.get((i, pid))
            if comp is None:
                comp = by_key[(i, pid)] = Comparison(pid, math.nan)
                results[i].comparisons.append(comp)
            if swapped:
                comp.p_ba = p
            else:
                comp.p_ab = p
            if why:
                comp.rationales += (why,)
        if progress is not None:
            progress(len(prompts))
        return results

    def _score(self, texts: list[str]) -> tuple[list[float], list[str]]:
        chats: list[list[dict[str, str]]] = [
            [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": t}] for t in texts]
        rationales = [""] * len(chats)
        if self.cot:
            params = SamplingParams(max_tokens=self.cot_max_tokens, temperature=0.0)
            rationales = [g[0].text for g in self.generator.generate(chats, params)]
            chats = [c + [{"role": "assistant", "content": why or "(no reasoning)"},
                          {"role": "user", "content": _COT_FINAL}]
                     for c, why in zip(chats, rationales)]
        scores = self.generator.choice_logprobs(chats, list(CHOICES))
        probs = [soft_label(a, b) for a, b in scores]
        if self.cot:
            probs = [clamp_probability(p, *self.cot_clamp) for p in probs]
        return probs, rationales


# ---- pointwise -------------------------------------------------------------------------------------


@dataclass
class PointScore:
    score: float  # probability-weighted, on [low, high]; nan = no signal
    reward: float  # scaled to [-1, 1]
    probs: list[float]  # over the scale, renormalised


class PointwiseJudge:
    """A 1-10 (by default) rating per response; the score is probability-weighted over the scale."""

    def __init__(self, generator: Generator, criterion: str, *, low: int = 1, high: int = 10,
                 max_response_chars: int = 1500) -> None:
        if high <= low:
            raise ValueError(f"scale must have high > low, got {low}..{high}")
        self.generator, self.criterion, self.low, self.high = generator, criterion, low, high
        self.max_response_chars = max_response_chars
        self.choices = [str(s) for s in range(low, high + 1)]

    @classmethod
    def from_principle(cls, generator: Generator, principle: Principle, **kw: object) -> "PointwiseJudge":
        return cls(generator, f"{principle.name}: {principle.statement}", **kw)  # type: ignore[arg-type]

    def chat(self, prompt: Chat, response: str) -> list[dict[str, str]]:
        text = (f"Consider the following conversation between a human and an AI assistant.\n\n"
                f"{render_conversation(prompt, self.max_response_chars)}\n\nAssistant's response: "
                f"{_short(response, self.max_response_chars)}\n\nRate the assistant's response from {self.low} "
                f"(very poor) to {self.high} (excellent) on this criterion: {self.criterion}\n"
                "Answer with a single number.")
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]

    def score(self, prompts: Sequence[Chat], responses: Sequence[str]) -> list[PointScore]:
        chats = [self.chat(p, r) for p, r in zip(prompts, responses)]
        rows = self.generator.choice_logprobs(chats, self.choices) if chats else []
        values = [float(c) for c in self.choices]
        out = []
        for logps in rows:
            probs = exclusive_prefix_probs(self.choices, logps)
            total = sum(probs)
            e = expected_score(values, probs)
            out.append(PointScore(e, scaled_reward(e, self.low, self.high) if not math.isnan(e) else math.nan,
                                  [p / total if total > 0 else math.nan for p in probs]))
        return out
