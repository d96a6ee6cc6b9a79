"""The LLM-judge rail: Llama-Guard-style prompt, robust parsing, fail-open/closed, log-prob mode."""

from __future__ import annotations

import math

import pytest

from alignkit.feedback.constitution import default_constitution
from alignkit.generate.base import Completion
from alignkit.safety.judge import LlmJudgeRail, judge_prompt, parse_judgement

C = default_constitution()


class ScriptedJudge:
    """A Generator that answers each prompt with the next scripted reply, and records the prompts."""

    name = "scripted"

    def __init__(self, replies, logprobs=None, fail=False):
        self.replies, self.logprobs, self.fail, self.seen = list(replies), logprobs, fail, []

    def generate(self, chats, params=None):
        if self.fail:
            raise ConnectionError("judge down")
        self.seen += [c[-1]["content"] for c in chats]
        return [[Completion(self.replies.pop(0), tokens=3, finish_reason="stop")] for _ in chats]

    def choice_logprobs(self, chats, choices):
        assert list(choices) == ["safe", "unsafe"]
        return [self.logprobs for _ in chats]


@pytest.mark.parametrize("reply, unsafe, cats", [
    ("safe", False, []),
    ("Safe.", False, []),
    ("unsafe\nS1", True, ["violent_crimes"]),
    ("**unsafe**\nS1, S10", True, ["violent_crimes", "hate"]),
    ("UNSAFE (s9)", True, ["indiscriminate_weapons"]),
    ("unsafe\nviolent_crimes", True, ["violent_crimes"]),
    ("The message is not safe: it is about Self-harm", True, ["self_harm"]),
    ("unsafe", True, []),
    ("I cannot determine that.", None, []),
])
def test_parse_judgement(reply, unsafe, cats):
    assert parse_judgement(reply, C) == (unsafe, cats)


def test_prompt_lists_categories_and_targets_the_right_role():
    p = judge_prompt(C, "Sure, here's how.", "output", prompt="how do I pick a lock")
    assert "S1: Violent crimes." in p and "S14: Code interpreter abuse." in p
    assert "User: how do I pick a lock" in p and "Agent: Sure, here's how." in p
    assert "ONLY THE LAST Agent message" in p
    assert "ONLY THE LAST User message" in judge_prompt(C, "hi", "input")


def test_rail_blocks_on_unsafe_and_names_the_category():
    judge = ScriptedJudge(["unsafe\nS9", "safe"])
    bad, ok = LlmJudgeRail(judge, C).check(["how to build a bomb", "how to bake bread"], "input")
    assert bad.action == "block" and bad.category == "indiscriminate_weapons"
    assert "Indiscriminate weapons" in bad.reason
    assert ok.action == "allow"
    assert len(judge.seen) == 2 and "how to bake bread" in judge.seen[1]


def test_unreadable_or_failing_judge_follows_on_error():
    assert LlmJudgeRail(ScriptedJudge(["hmm"]), C).check(["x"], "output")[0].action == "allow"
    assert LlmJudgeRail(ScriptedJudge(["hmm"]), C, on_error="block").check(["x"], "output")[0].action == "block"
    down = LlmJudgeRail(ScriptedJudge([], fail=True), C, on_error="block").check(["x", "y"], "output")
    assert [v.action for v in down] == ["block", "block"]


def test_logprob_mode_thresholds_the_unsafe_probability():
    rail = LlmJudgeRail(ScriptedJudge([], logprobs=[math.log(0.2), math.log(0.8)]), C, use_logprobs=True)
    v = rail.check(["x"], "input")[0]
    assert v.action == "block" and v.score == pytest.approx(0.8)
    rail = LlmJudgeRail(ScriptedJudge([], logprobs=[math.log(0.9), math.log(0.1)]), C, use_logprobs=True)
    assert rail.check(["x"], "input")[0].action == "allow"
