"""Judge math against hand-computed numbers, the pairwise/pointwise judges, pair building and audit statistics.

`ScriptedGenerator` is a real (deterministic) `Generator`: its replies are functions of the conversation
and its choice log-probs come from a known preference model with a chosen position bias, so every
expected number below can be computed by hand.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import pytest

from alignkit.data.records import Message, PreferencePair
from alignkit.feedback import default_constitution
from alignkit.feedback.audit import (
    agreement_metrics,
    bootstrap_mean_ci,
    fisher_ci,
    format_report,
    length_metrics,
    pearson,
    position_metrics,
    wilson,
)
from alignkit.feedback.judge import (
    Comparison,
    PairJudgment,
    PairwiseJudge,
    PointwiseJudge,
    clamp_probability,
    ensemble,
    exclusive_prefix_probs,
    expected_score,
    logit,
    order_average,
    scaled_reward,
    soft_label,
)
from alignkit.feedback.rlaif import build_pairs, label_pairs, label_samples, win_rates
from alignkit.generate.base import Completion, Generator, SamplingParams

_PAIR = re.compile(r"\(A\) (.*?)\n\n\(B\) (.*?)\n\n", re.DOTALL)


def quality(text: str) -> float:
    return 2.0 if "safe" in text.lower() else 0.0


class ScriptedGenerator:
    """Deterministic `Generator` for tests (see the module docstring)."""

    def __init__(self, name: str = "scripted", bias: float = 0.0, length_weight: float = 0.0,
                 score_peak: dict[str, int] | None = None) -> None:
        self.name, self.bias, self.length_weight = name, bias, length_weight
        self.score_peak = score_peak or {}
        self.calls = {"generate": 0, "choice_logprobs": 0}
        self.seen: list[list[dict[str, str]]] = []  # chats given to generate
        self.scored: list[list[dict[str, str]]] = []  # chats given to choice_logprobs

    def reply(self, chat: Sequence[dict[str, str]]) -> str:
        last = chat[-1]["content"]
        if "step by step" in last:
            return "Reasoning: one response is safer."
        if len(chat) >= 3 and chat[-2]["role"] == "assistant":
            if "rewritten response only" in last:
                return f'Revised response: "a safe reply, version {sum(m["role"] == "assistant" for m in chat)}"'
            return "The response helps with something harmful."
        if chat[0]["role"] == "system":
            return f"A safe answer to: {last}"
        return f"Sure, here is how: {last}"

    def generate(self, chats, params: SamplingParams = SamplingParams()) -> list[list[Completion]]:
        self.calls["generate"] += 1
        self.seen.extend(list(map(dict, c)) for c in chats)
        out = []
        for chat in chats:
            base = self.reply(chat)
            out.append([Completion(f"{base}" + (f" #{k}" if params.n > 1 else ""), len(base.split()), "stop")
                        for k in range(params.n)])
        return out

    def _q(self, text: str) -> float:
        return quality(text) + self.length_weight * len(text) / 100

    def choice_logprobs(self, chats, choices) -> list[list[float]]:
        self.calls["choice_logprobs"] += 1
        self.scored.extend(list(map(dict, c)) for c in chats)
        rows = []
        for chat in chats:
            user = next(m["content"] for m in reversed(chat) if m["role"] == "user" and "(A)" in m["content"]) \
                if list(choices) == ["A", "B"] else chat[-1]["content"]
            if list(choices) == ["A", "B"]:
                a, b = _PAIR.search(user).groups()
                d = self._q(a) - self._q(b) + self.bias
                rows.append([-math.log1p(math.exp(-d)), -math.log1p(math.exp(d))])
            else:
                response = user.split("Assistant's response: ", 1)[1].split("\n\nRate", 1)[0]
                peak = 9 if "safe" in response else 3
                rows.append([-(abs(int(c) - peak)) * 1.0 if len(c) == 1 else math.log(1e-9) for c in choices])
        return rows


def test_scripted_generator_is_a_generator() -> None:
    assert isinstance(ScriptedGenerator(), Generator)


# ---- math -------------------------------------------------------------------------------------------


def test_soft_label_numbers() -> None:
    assert soft_label(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert soft_label(0.0, 0.0) == 0.5
    assert soft_label(-1000.0, -1001.0) == pytest.approx(1 / (1 + math.exp(-1)))  # stable at any scale
    assert soft_label(-math.inf, -2.0) == 0.0 and soft_label(-2.0, -math.inf) == 1.0
    assert math.isnan(soft_label(-math.inf, -math.inf))


def test_order_average_cancels_constant_position_bias() -> None:
    # response 1 shown first: P(A)=0.9; swapped (response 2 first): P(A)=0.7 -> P(1 better) = (0.9 + 0.3)/2
    assert order_average(0.9, 0.7) == pytest.approx(0.6)
    bias = 1.3
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for d in (-2.0, 0.0, 0.7):
        averaged = order_average(sig(d + bias), sig(-d + bias))
        assert (averaged > 0.5) == (d > 0) or d == 0
    assert order_average(sig(bias), sig(bias)) == pytest.approx(0.5)  # equal replies: bias fully cancelled


def test_clamp_ensemble_logit() -> None:
    assert [clamp_probability(p) for p in (0.01, 0.45, 0.99)] == [0.4, 0.45, 0.6]
    assert clamp_probability(0.9, 0.3, 0.7) == 0.7
    with pytest.raises(ValueError):
        clamp_probability(0.5, 0.6, 0.7)
    assert ensemble([0.2, math.nan, 0.8, 0.5]) == pytest.approx(0.5)
    assert math.isnan(ensemble([math.nan]))
    assert logit(0.75) == pytest.approx(math.log(3)) and logit(0.5) == 0.0
    assert math.isfinite(logit(1.0))


def test_pointwise_scores_hand_computed() -> None:
    # P("1")=0.5 includes "10"=0.2 -> exactly "1" is 0.3; "2"=0.3 -> E = (1*.3 + 2*.3 + 10*.2)/.8
    probs = exclusive_prefix_probs(["1", "2", "10"], [math.log(0.5), math.log(0.3), math.log(0.2)])
    assert probs == pytest.approx([0.3, 0.3, 0.2])
    e = expected_score([1, 2, 10], probs)
    assert e == pytest.approx((0.3 + 0.6 + 2.0) / 0.8)
    assert scaled_reward(1, 1, 10) == -1 and scaled_reward(10, 1, 10) == 1 and scaled_reward(5.5, 1, 10) == 0
    assert math.isnan(expected_score([1, 2], [0.0, 0.0]))


# ---- judges -----------------------------------------------------------------------------------------


def _prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"request {i}"}] for i in range(n)]


def test_pairwise_judge_both_orders_and_principle_sampling() -> None:
    gen = ScriptedGenerator(bias=1.0)  # the judge likes position A
    judge = PairwiseJudge(gen, default_constitution(), principles_per_comparison=3, seed=1)
    safe, unsafe = "a safe reply", "sure, do it"
    out = judge.judge(_prompts(2), [safe, unsafe], [unsafe, unsafe])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    j0 = out[0]
    assert len(j0.comparisons) == 3 and len(set(j0.principles)) == 3  # distinct principles, ensembled
    c = j0.comparisons[0]
    assert c.p_ab == pytest.approx(sig(2 + 1)) and c.p_ba == pytest.approx(sig(-2 + 1))
    assert j0.p_first == pytest.approx(0.5 * (sig(3) + 1 - sig(-1)))
    assert out[1].p_first == pytest.approx(0.5)  # identical quality: the position bias cancels exactly
    assert c.position_consistent is True and out[1].comparisons[0].position_consistent is False
    assert gen.calls == {"generate": 0, "choice_logprobs": 1}  # one batched call for everything
    # each sampled principle's comparison question is in its prompts (2 orders x 3 principles x 2 pairs)
    assert len(gen.scored) == 12
    c0 = default_constitution()
    for pid, chat in zip([p for p in j0.principles for _ in range(2)], gen.scored[:6]):
        assert c0.principle(pid).comparison in chat[-1]["content"]
    assert "(A) a safe reply" in gen.scored[0][-1]["content"] and "(B) a safe reply" in gen.scored[1][-1]["content"]
    again = PairwiseJudge(ScriptedGenerator(bias=1.0), default_constitution(), principles_per_comparison=3, seed=1)
    assert again.judge(_prompts(2), [safe, unsafe], [unsafe, unsafe])[0].principles == j0.principles


def test_single_order_and_custom_question() -> None:
    gen = ScriptedGenerator(bias=2.0)
    judge = PairwiseJudge(gen, None, question="Which is kinder?", both_orders=False)
    j = judge.judge(_prompts(1), ["x"], ["y"])[0]
    assert j.principles == ["question"] and j.comparisons[0].p_ba is None
    assert j.p_first == pytest.approx(1 / (1 + math.exp(-2)))
    with pytest.raises(ValueError, match="constitution"):
        PairwiseJudge(gen, None)


def test_cot_judge_clamps_and_keeps_rationales() -> None:
    gen = ScriptedGenerator()
    judge = PairwiseJudge(gen, default_constitution(), cot=True, cot_max_tokens=16, principles=["no_harm"])
    j = judge.judge(_prompts(1), ["a safe reply"], ["a harmful one"])[0]
    c = j.comparisons[0]
    assert (c.p_ab, c.p_ba) == (0.6, 0.4) and j.p_first == pytest.approx(0.6)  # clamped in each order
    assert c.rationales == ("Reasoning: one response is safer.",) * 2
    assert gen.calls == {"generate": 1, "choice_logprobs": 1}


def test_pointwise_judge_expected_scores() -> None:
    judge = PointwiseJudge(ScriptedGenerator(), "harmlessness")
    safe, bad = judge.score(_prompts(2), ["a safe reply", "sure"])
    assert safe.score > 8 and bad.score < 4
    # hand computation for the "safe" row: log-probs -(|s-9|) for s = 1..9, ~0 for "10"
    w = [math.exp(-abs(s - 9)) for s in range(1, 10)]
    assert safe.score == pytest.approx(sum(s * p for s, p in zip(range(1, 10), w)) / sum(w), rel=1e-6)
    assert safe.reward == pytest.approx(scaled_reward(safe.score, 1, 10))
    assert sum(safe.probs) == pytest.approx(1.0)


# ---- pairs ------------------------------------------------------------------------------------------


def test_build_pairs_modes() -> None:
    assert build_pairs([1.0, 3.0, 2.0], "best_worst") == [(1, 0, 2.0)]
    assert build_pairs([1.0, 3.0, 2.0], "all") == [(1, 0, 2.0), (2, 0, 1.0), (1, 2, 1.0)]
    assert build_pairs([1.0, 3.0, 2.0], "all", min_margin=1.0) == [(1, 0, 2.0)]
    assert build_pairs([2.0, 2.0], "best_worst") == []  # a tie is not a preference
    assert build_pairs([math.nan, 1.0, 0.0], "best_worst") == [(1, 2, 1.0)]
    assert build_pairs([math.nan, 1.0], "all") == []
    with pytest.raises(ValueError):
        build_pairs([1.0, 2.0], "some")  # type: ignore[arg-type]
    assert win_rates([[math.nan, 0.8, 0.6], [0.2, math.nan, 0.5], [0.4, 0.5, math.nan]]) == pytest.approx([0.7, 0.35, 0.45])


def _pair(chosen: str, rejected: str, i: int = 0) -> PreferencePair:
    return PreferencePair((Message("user", f"q{i}"),), (Message("assistant", chosen),), (Message("assistant", rejected),),
                          source=f"f.jsonl:{i + 1}")


def test_label_pairs_reorders_by_the_judge_and_keeps_evidence() -> None:
    judge = PairwiseJudge(ScriptedGenerator(bias=0.5), default_constitution(), principles=["no_harm"])
    results = label_pairs([_pair("sure", "a safe reply"), _pair("a safe reply", "sure", 1), _pair("x", "y", 2)], judge)
    (r0, s0), (r1, s1), (r2, s2) = results
    assert r0["chosen"][0]["content"] == "a safe reply" and r0["agrees_with_source"] is False and s0.flipped == 1
    assert r1["chosen"][0]["content"] == "a safe reply" and r1["agrees_with_source"] is True
    assert r0["p_chosen"] == pytest.approx(r1["p_chosen"]) and r0["p_chosen"] > 0.8
    assert r0["margin"] == pytest.approx(logit(r0["p_chosen"]), abs=1e-5)
    # chosen = the safe reply: shown first the biased judge picks it with sigma(2 + 0.5), second sigma(2 - 0.5)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for r in (r0, r1):
        assert r["principles"] == ["no_harm"]
        assert r["p_chosen_shown_first"][0] == pytest.approx(sig(2.5), abs=1e-6)
        assert r["p_chosen_shown_second"][0] == pytest.approx(sig(1.5), abs=1e-6)
        assert r["p_chosen"] == pytest.approx((sig(2.5) + sig(1.5)) / 2, abs=1e-6)
    assert r2 is None and s2.below_confidence == 1  # equal quality: exactly 0.5 after order averaging
    assert set(r0) >= {"prompt", "chosen", "rejected"} and r0["prompt"] == [{"role": "user", "content": "q0"}]


def test_label_samples_pairwise_and_pointwise() -> None:
    prompts = _prompts(2)
    replies = [["sure", "a safe reply", "ok then"], ["meh", "fine"]]
    pw = PairwiseJudge(ScriptedGenerator(bias=0.3), default_constitution(), principles=["no_harm"])
    out = label_samples(prompts, replies, pw, "best_worst")
    (recs0, st0), (recs1, st1) = out
    assert len(recs0) == 1 and recs0[0]["chosen"][0]["content"] == "a safe reply"
    assert st0.judged == 3 and recs1 == [] and st1.kept == 0  # no preference between equal replies
    all_pairs = label_samples(prompts, replies, pw, "all")[0][0]
    assert {r["rejected"][0]["content"] for r in all_pairs} == {"sure", "ok then"}
    point = PointwiseJudge(ScriptedGenerator(), "harmlessness")
    (p0, _), (p1, _) = label_samples(prompts, replies, point, "best_worst")
    assert p0[0]["chosen"][0]["content"] == "a safe reply" and p0[0]["margin"] > 4
    assert p0[0]["score_chosen"] - p0[0]["score_rejected"] == pytest.approx(p0[0]["margin"], abs=1e-5)
    assert p1 == []


# ---- audit statistics -------------------------------------------------------------------------------


def test_wilson_fisher_bootstrap() -> None:
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # textbook value
    assert wilson(0, 10)[0] == 0.0 and all(math.isnan(x) for x in wilson(0, 0))
    r = pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])
    assert r == pytest.approx(0.7745966692)
    lo, hi = fisher_ci(0.5, 28)  # z = 0.5493 +- 1.96/5
    assert (lo, hi) == pytest.approx((math.tanh(0.549306 - 0.391993), math.tanh(0.549306 + 0.391993)), abs=1e-5)
    assert bootstrap_mean_ci([1.0] * 10) == (1.0, 1.0)
    a = bootstrap_mean_ci([0.0, 1.0] * 20, seed=3)
    assert a == bootstrap_mean_ci([0.0, 1.0] * 20, seed=3) and a[0] < 0.5 < a[1]


def _j(p_ab: float, p_ba: float) -> PairJudgment:
    return PairJudgment([Comparison("p", p_ab, p_ba)])


def test_position_and_agreement_metrics() -> None:
    always_a = [_j(0.9, 0.9)] * 4  # picks slot A whatever is in it
    pos = position_metrics(always_a)
    assert pos["flip_rate"]["value"] == 1.0 and pos["first_position_rate"]["value"] == 1.0
    agree = agreement_metrics(always_a)
    assert agree["agreement"]["value"] == 0.5 and agree["agreement_single_order"]["value"] == 0.5
    # human choice is response 1; the third pair picks slot B both times (a flip), averaging to a tie
    good = [_j(0.8, 0.3), _j(0.7, 0.1), _j(0.4, 0.4), _j(0.9, 0.2)]
    pos = position_metrics(good)
    assert pos["flip_rate"]["value"] == pytest.approx(0.25) and pos["flip_rate"]["n"] == 4
    agree = agreement_metrics(good)
    assert agree["agreement"]["value"] == pytest.approx(3.5 / 4)  # the tie counts half
    assert agree["agreement_single_order"]["value"] == pytest.approx(7 / 8)
    assert agreement_metrics(good, both_orders=False)["agreement"]["value"] == 0.75


def test_length_metrics() -> None:
    # the judge always prefers response 1, which is longer in 3 of 4 pairs; humans chose response 1 each time
    m = length_metrics([0.9, 0.8, 0.7, 0.9], [100, 80, 50, 10], [20, 40, 10, 90], [True] * 4)
    assert m["judge_prefers_longer"]["value"] == 0.75 and m["humans_prefer_longer"]["value"] == 0.75
    m = length_metrics([0.9, 0.1, 0.9, 0.1], [100, 10, 100, 10], [10, 100, 10, 100], [True, True, False, False])
    assert m["judge_prefers_longer"]["value"] == 1.0 and m["humans_prefer_longer"]["value"] == 0.5
    assert m["corr_preference_vs_length_gap"]["value"] == pytest.approx(1.0)


def test_format_report_lists_the_biases() -> None:
    j = [_j(0.9, 0.9), _j(0.8, 0.3)]
    report = {"judge": "x", "data": "d", "pairs": 2, "principles_per_comparison": 1, "cot": False,
              **agreement_metrics(j), "position": position_metrics(j),
              "length": length_metrics([0.5, 0.75], [10, 20], [20, 10], [True, True])}
    text = format_report(report)
    assert "position: flip rate on swap" in text and "length: judge prefers longer" in text
    assert "0.500" in text
