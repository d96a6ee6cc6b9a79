"""Reward functions for RL: reward models, AI judges, Python rules, and weighted combinations.

Importing this package imports no torch; reward models and judges load their models when built.
"""

from alignkit.rewards.base import RewardFn, RewardResult, WeightedReward, prompt_text
from alignkit.rewards.judge import JudgeReward
from alignkit.rewards.model import RewardModelScorer, load_reward_model
from alignkit.rewards.rules import RULES, RuleReward, extract_answer, gsm8k_gold, make_rule, same_number
from alignkit.rewards.spec import RewardSpec, build_one, build_reward

__all__ = [
    "RewardFn", "RewardResult", "WeightedReward", "prompt_text", "JudgeReward", "RewardModelScorer",
    "load_reward_model", "RULES", "RuleReward", "extract_answer", "gsm8k_gold", "make_rule", "same_number",
    "RewardSpec", "build_one", "build_reward",
]
