"""Python reward rules: verifiable answers (GSM8K exact match), format checks, length.

Rules see the completion text and the prompt's `meta` (a GSM8K prompt carries its gold answer there).
They are cheap, deterministic and torch-free.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

from alignkit.generate.base import Chat
from alignkit.rewards.base import RewardResult

__all__ = ["RULES", "RuleReward", "gsm8k_gold", "extract_answer", "same_number", "make_rule"]

# the last number in a text, allowing a sign, thousands separators and decimals
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_STRICT = re.compile(r"####\s*(-?[\d\.,\$]+)")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?\s*(-?[\d\.,]+)", re.IGNORECASE)


def _clean(number: str) -> str:
    return number.replace(",", "").replace("$", "").strip().rstrip(".")


def gsm8k_gold(answer: str) -> str:
    """The gold final answer of a GSM8K solution: the text after '####', without ',' (SOURCE.md)."""
    if "####" not in answer:
        raise ValueError("a GSM8K answer must end with '#### <number>'")
    return _clean(answer.split("####")[-1])


def extract_answer(text: str, mode: str = "flexible") -> str | None:
    """The model's final answer: '#### N', else 'the answer is N', else (flexible) the last number."""
    for pattern in (_STRICT, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return _clean(found[-1])
    if mode == "strict":
        return None
    numbers = _NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def same_number(a: str | None, b: str | None) -> bool:
    if a is None or b is None or not a or not b:
        return False
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        return a == b


RuleFn = Callable[[str, str, Mapping[str, Any]], float]  # (request, completion, meta) -> score


def _gsm8k_answer(mode: str = "flexible") -> RuleFn:
    def score(request: str, completion: str, meta: Mapping[str, Any]) -> float:
        gold = meta.get("answer")
        if gold is None:
            raise ValueError("rule gsm8k_answer needs the gold answer in the prompt's meta['answer']")
        gold = gsm8k_gold(str(gold)) if "####" in str(gold) else _clean(str(gold))
        return 1.0 if same_number(extract_answer(completion, mode), gold) else 0.0

    return score


def _regex(pattern: str, flags: str = "is") -> RuleFn:
    """1.0 when `pattern` is found in the completion (format checks: 'The answer is \\d+', a JSON block...)."""
    bits = {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE}
    compiled = re.compile(pattern, sum((bits[f] for f in flags), 0))

    def score(request: str, completion: str, meta: Mapping[str, Any]) -> float:
        return 1.0 if compiled.search(completion) else 0.0

    return score


def _length(max_chars: int = 400) -> RuleFn:
    """0 up to `max_chars`, then -(excess / max_chars): a brevity pressure (and a reward-hacking probe)."""
    def score(request: str, completion: str, meta: Mapping[str, Any]) -> float:
        return -max(0, len(completion) - max_chars) / max_chars

    return score


RULES: dict[str, Callable[..., RuleFn]] = {"gsm8k_answer": _gsm8k_answer, "regex": _regex, "length": _length}


class RuleReward:
    """A named rule applied completion by completion."""

    def __init__(self, name: str, rule: RuleFn) -> None:
        self.name, self.rule = name, rule

    def __call__(self, prompts: Sequence[Chat], completions: Sequence[str],
                 meta: Sequence[Mapping[str, Any]]) -> RewardResult:
        from alignkit.rewards.base import prompt_text

        return RewardResult([float(self.rule(prompt_text(p), c, m)) for p, c, m in zip(prompts, completions, meta)])


def make_rule(name: str, options: Mapping[str, Any] | None = None) -> RuleReward:
    """A rule by name with keyword options, e.g. make_rule('regex', {'pattern': 'answer is'})."""
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; available: {', '.join(sorted(RULES))}")
    try:
        return RuleReward(name, RULES[name](**dict(options or {})))
    except TypeError as exc:
        raise ValueError(f"rule {name!r}: bad options {dict(options or {})}: {exc}") from exc
