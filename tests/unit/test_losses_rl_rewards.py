"""Reward functions (rules, judge, weighted sums, specs) and the reward-hacking monitors."""

from __future__ import annotations

import math

import pytest

from alignkit.config import from_dict
from alignkit.errors import ConfigError
from alignkit.rewards import (JudgeReward, RewardResult, RewardSpec, WeightedReward, build_reward, extract_answer,
                              gsm8k_gold, make_rule, same_number)
from alignkit.train.monitors import MonitorSettings, RewardHackingMonitor, pearson, trend

CHAT = [{"role": "user", "content": "What is 2 + 3?"}]


def test_gsm8k_parsing():
    assert gsm8k_gold("She has 3 + 2 = <<3+2=5>>5 apples.\n#### 1,250") == "1250"
    assert extract_answer("so 4 + 4 = 8.\n#### 8") == "8"
    assert extract_answer("The answer is $1,200.") == "1200"
    assert extract_answer("I think 3 then 7 apples") == "7"  # flexible: the last number
    assert extract_answer("I think 3 then 7 apples", mode="strict") is None
    assert same_number("5", "5.0") and not same_number("5", "6") and not same_number(None, "5")


def test_rules_score_completions():
    exact = make_rule("gsm8k_answer")
    res = exact([CHAT] * 3, ["The answer is 5.", "It is 6", "5"], [{"answer": "... #### 5"}] * 3)
    assert res.scores == [1.0, 0.0, 1.0]
    fmt = make_rule("regex", {"pattern": r"answer is -?\d+"})
    assert fmt([CHAT] * 2, ["The answer is 5.", "five"], [{}, {}]).scores == [1.0, 0.0]
    length = make_rule("length", {"max_chars": 10})
    assert length([CHAT] * 2, ["short", "x" * 25], [{}, {}]).scores == [0.0, -1.5]
    with pytest.raises(ValueError, match="gold answer"):
        exact([CHAT], ["5"], [{}])
    with pytest.raises(ValueError, match="unknown rule"):
        make_rule("nope")
    with pytest.raises(ValueError, match="bad options"):
        make_rule("regex", {"patern": "x"})


class _Ensemble:
    name = "ens"

    def __call__(self, prompts, completions, meta):
        return RewardResult([1.0] * len(completions), disagreement=[0.5] * len(completions))


def test_weighted_reward_sums_components_and_keeps_parts():
    fmt = make_rule("regex", {"pattern": "answer"})
    combo = WeightedReward([(fmt, 0.5), (_Ensemble(), 2.0)])
    res = combo([CHAT] * 2, ["the answer", "no"], [{}, {}])
    assert res.scores == [0.5 + 2.0, 2.0]
    assert res.parts == {"regex": [1.0, 0.0], "ens": [1.0, 1.0]}
    assert res.disagreement == [1.0, 1.0]  # |weight| * member disagreement
    assert combo.name == "0.5*regex+2*ens"


class _FakeJudge:
    name = "fake"

    def __init__(self):
        self.seen = []

    def generate(self, chats, params=None):
        raise NotImplementedError

    def choice_logprobs(self, chats, choices):
        self.seen.append((chats, list(choices)))
        return [[math.log(0.6), math.log(0.2)] for _ in chats]


def test_judge_reward_is_p_yes_over_yes_and_no():
    gen = _FakeJudge()
    judge = JudgeReward(gen, question="Is it correct?")
    res = judge([CHAT], ["5"], [{}])
    assert res.scores[0] == pytest.approx(0.75)  # 0.6 / (0.6 + 0.2)
    chats, choices = gen.seen[0]
    assert choices == ["Yes", "No"]
    assert "What is 2 + 3?" in chats[0][-1]["content"] and "Is it correct?" in chats[0][-1]["content"]


def test_reward_specs_from_a_recipe():
    specs = [from_dict(RewardSpec, {"kind": "rule", "name": "gsm8k_answer"}),
             from_dict(RewardSpec, {"kind": "rule", "name": "regex", "weight": 0.25, "options": {"pattern": "is"}})]
    reward = build_reward(specs)
    assert reward([CHAT], ["The answer is 5"], [{"answer": "#### 5"}]).scores == [1.25]
    with pytest.raises(ConfigError, match="unknown rule"):
        from_dict(RewardSpec, {"kind": "rule", "name": "gsm8k"})
    with pytest.raises(ConfigError, match="ensemble applies to kind=model"):
        from_dict(RewardSpec, {"kind": "rule", "name": "regex", "ensemble": ["a"]})


# ----------------------------------------------------------------------------------------- monitors


def test_pearson_and_trend():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert trend([0.0, 1.0, 2.0, 3.0]) == pytest.approx(3.0)
    assert trend([5.0, 5.0, 5.0]) == 0.0


def test_monitor_records_signals():
    mon = RewardHackingMonitor(MonitorSettings())
    m = mon.record(1, proxy=[1.0, 2.0, 3.0], lengths=[10, 20, 30], kl=[0.1, 0.2, 0.3], gold=[1.0, 1.0, 1.0],
                   disagreement=[0.5, 0.5, 0.5])
    assert m["monitor/reward"] == 2.0 and m["monitor/kl"] == pytest.approx(0.2) and m["monitor/length"] == 20
    assert m["monitor/length_reward_corr"] == pytest.approx(1.0)
    assert m["monitor/gap"] == pytest.approx(1.0) and m["monitor/disagreement"] == 0.5


def _run(mon, proxy, gold):
    for step, (p, g) in enumerate(zip(proxy, gold), 1):
        mon.record(step, proxy=[p], lengths=[1.0], kl=[0.1 * step], gold=[g])


def test_early_stop_when_gold_falls_while_proxy_rises(tmp_path):
    settings = MonitorSettings(gold=RewardSpec(kind="rule", name="length"), early_stop=True, window_steps=4,
                               min_gold_drop=0.1)
    healthy = RewardHackingMonitor(settings)
    _run(healthy, [1, 2, 3, 4, 5, 6], [1, 1.5, 2, 2.5, 3, 3.5])
    assert healthy.should_stop() is None
    hacked = RewardHackingMonitor(settings)
    _run(hacked, [1, 2, 3, 4, 5, 6], [3, 3, 2.8, 2.5, 2.2, 2.0])
    reason = hacked.should_stop()
    assert reason is not None and "gold score fell" in reason
    noise = RewardHackingMonitor(settings)  # a drop below min_gold_drop is noise
    _run(noise, [1, 2, 3, 4], [3, 2.98, 3.0, 2.97])
    assert noise.should_stop() is None

    restored = RewardHackingMonitor(settings)
    restored.load_state_dict(hacked.state_dict())
    assert restored.should_stop() == reason
    assert hacked.plot(tmp_path / "monitors.png").stat().st_size > 5000


def test_early_stop_needs_a_gold_scorer():
    with pytest.raises(ConfigError, match="needs a gold scorer"):
        from_dict(MonitorSettings, {"early_stop": True})
