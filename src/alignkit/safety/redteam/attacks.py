"""Static attack families: each attack turns a behavior into one chat, deterministically.

    direct/request                    the behavior as asked (HarmBench DirectRequest)
    jailbreak/<category>              a template from roleplay, ignore_previous, hypothetical, refusal_suppression
    obfuscation/<transform>           the request encoded (base64, rot13, leetspeak, char_split, pig_latin, ...)
    many_shot/inline, many_shot/turns fabricated dialogue in which an assistant always complies, then the request
    injection/document, injection/tool the request hidden in a document to summarise or in a tool's output

The attack text lives in `resources/redteam_attacks.yaml` and `resources/redteam_shots.jsonl`
(alignkit's own wording); `load_attack_text(path)` reads a user's replacement with the same keys.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from alignkit.errors import ConfigError, DataError
from alignkit.safety.redteam.base import AttackCase, Behavior, case_id
from alignkit.safety.redteam.transforms import Transform

__all__ = ["AttackText", "load_attack_text", "load_shots", "continuation", "topic_of", "fill", "DirectRequest",
           "TemplateAttack", "ObfuscationAttack", "ManyShotAttack", "InjectionAttack", "TEMPLATE_CATEGORIES"]

TEMPLATE_CATEGORIES = ("roleplay", "ignore_previous", "hypothetical", "refusal_suppression")


@dataclass(frozen=True)
class AttackText:
    templates: dict[str, list[tuple[str, str]]]  # category -> [(template id, text)]
    obfuscation_prompt: str
    many_shot_header: str
    injection: dict[str, dict[str, str]]
    crescendo: list[tuple[str, list[str]]]  # [(script id, turns)]
    pair: dict[str, str]
    source: str = ""
    shots: list[tuple[str, str]] = field(default_factory=list)  # many-shot (user, assistant) pairs


def _need(data: Any, key: str, where: str, kind: type = dict) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ConfigError(f"{where}: missing key '{key}'")
    if not isinstance(data[key], kind):
        raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}, got {type(data[key]).__name__}")
    return data[key]


def load_attack_text(path: str | Path | None = None, shots_path: str | Path | None = None) -> AttackText:
    """The attack wording (YAML); errors name the file and key."""
    import yaml

    if path is None:
        where = "resources/redteam_attacks.yaml"
        raw = resources.files("alignkit.resources").joinpath("redteam_attacks.yaml").read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: attack text file not found") from None
    data = yaml.safe_load(raw)
    tpl = _need(data, "templates", where)
    templates: dict[str, list[tuple[str, str]]] = {}
    for category, items in tpl.items():
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{where}: templates.{category} must be a non-empty list")
        templates[category] = [(str(_need(t, "id", f"{where}: templates.{category}[{i}]", str)),
                                str(_need(t, "text", f"{where}: templates.{category}[{i}]", str)))
                               for i, t in enumerate(items)]
    scripts = []
    for i, s in enumerate(_need(data, "crescendo", where, list)):
        turns = _need(s, "turns", f"{where}: crescendo[{i}]", list)
        if len(turns) < 2:
            raise ConfigError(f"{where}: crescendo[{i}].turns needs at least 2 turns")
        scripts.append((str(_need(s, "id", f"{where}: crescendo[{i}]", str)), [str(t) for t in turns]))
    injection = _need(data, "injection", where)
    for kind, keys in (("document", ("request", "before", "injected", "after")),
                       ("tool", ("system", "request", "call", "result"))):
        for key in keys:
            _need(_need(injection, kind, f"{where}: injection"), key, f"{where}: injection.{kind}", str)
    pair = _need(data, "pair", where)
    for key in ("system", "first", "feedback"):
        _need(pair, key, f"{where}: pair", str)
    obfuscation = _need(_need(data, "obfuscation", where), "prompt", f"{where}: obfuscation", str)
    header = _need(_need(data, "many_shot", where), "inline_header", f"{where}: many_shot", str)
    return AttackText(templates=templates, obfuscation_prompt=obfuscation, many_shot_header=header,
                      injection=injection, crescendo=scripts, pair=pair, source=where, shots=load_shots(shots_path))


def load_shots(path: str | Path | None = None) -> list[tuple[str, str]]:
    """Many-shot dialogue pairs: JSONL lines {"user": ..., "assistant": ...}."""
    if path is None:
        where = "resources/redteam_shots.jsonl"
        text = resources.files("alignkit.resources").joinpath("redteam_shots.jsonl").read_text(encoding="utf-8")
    else:
        where, text = str(path), Path(path).read_text(encoding="utf-8")
    shots = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}:{lineno}", f"invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("user", "assistant")):
            raise DataError(f"{where}:{lineno}", 'expected {"user": str, "assistant": str}')
        shots.append((row["user"], row["assistant"]))
    if not shots:
        raise DataError(where, "no many-shot examples")
    return shots


# ---- wording helpers ------------------------------------------------------------------------------------
_LEAD = re.compile(r"^(?:please\s+)?(?:give|write|generate|create|produce|provide|describe|explain|list|develop|"
                   r"design|compose|draft|outline|suggest|devise|convince|persuade|determine|find|offer)\b[^.]*?"
                   r"\b(?:for|on|about|of|how to|that|to)\s+", re.IGNORECASE)


def continuation(text: str) -> str:
    """The behavior as the rest of a sentence: first letter lower-cased (not acronyms), final period dropped."""
    text = text.strip().rstrip(".")
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        text = text[0].lower() + text[1:]
    return text


def topic_of(text: str, max_words: int = 8) -> str:
    """A short noun phrase for the behavior's subject ("synthesizing parathion"), for innocuous openers."""
    match = _LEAD.match(text.strip())
    rest = text.strip()[match.end():] if match else text.strip()
    words = rest.rstrip(".?! ").split()[:max_words]
    return continuation(" ".join(words)) or continuation(text)


def fill(template: str, behavior: Behavior, **extra: str) -> str:
    """Fill {behavior}, {behavior_lc}, {topic} and any `extra` placeholders (others are left as written)."""
    values = {"behavior": behavior.request, "behavior_lc": continuation(behavior.request if not behavior.context
                                                                          else behavior.text),
              "topic": topic_of(behavior.text), **extra}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


# ---- the static attacks ---------------------------------------------------------------------------------
@dataclass
class DirectRequest:
    name: str = "direct/request"
    family: str = "direct"

    def build(self, behavior: Behavior, rng: random.Random) -> AttackCase:
        return AttackCase(case_id(self.name, behavior), self.family, self.name, behavior,
                          [{"role": "user", "content": behavior.request}])


@dataclass
class TemplateAttack:
    """A jailbreak template of one category; with several templates, one is drawn per behavior."""

    category: str
    templates: Sequence[tuple[str, str]]
    family: str = "jailbreak"

    @property
    def name(self) -> str:
        if len(self.templates) == 1:
            return f"{self.family}/{self.category}/{self.templates[0][0]}"
        return f"{self.family}/{self.category}"

    def build(self, behavior: Behavior, rng: random.Random) -> AttackCase:
        tid, text = self.templates[rng.randrange(len(self.templates))]
        return AttackCase(case_id(self.name, behavior), self.family, self.name, behavior,
                          [{"role": "user", "content": fill(text, behavior)}], meta={"template": tid})


@dataclass
class ObfuscationAttack:
    transform: Transform
    prompt: str
    family: str = "obfuscation"

    @property
    def name(self) -> str:
        return f"{self.family}/{self.transform.name}"

    def build(self, behavior: Behavior, rng: random.Random) -> AttackCase:
        encoded = self.transform.encode(behavior.request)
        text = fill(self.prompt, behavior, scheme=self.transform.describe, encoded=encoded)
        return AttackCase(case_id(self.name, behavior), self.family, self.name, behavior,
                          [{"role": "user", "content": text}], decode=self.transform.read,
                          meta={"transform": self.transform.name})


@dataclass
class ManyShotAttack:
    """`shots` fabricated exchanges in which the assistant always complies, then the request.

    inline: one user message holding a transcript (Anil et al. 2024); turns: real chat turns that the
    target believes it wrote itself."""

    style: str  # "inline" or "turns"
    pool: Sequence[tuple[str, str]]
    shots: int = 8
    header: str = ""
    family: str = "many_shot"

    def __post_init__(self) -> None:
        if self.style not in ("inline", "turns"):
            raise ConfigError(f"many_shot style must be inline or turns, got {self.style!r}")
        if self.shots < 1:
            raise ConfigError(f"many_shot.shots must be >= 1, got {self.shots}")

    @property
    def name(self) -> str:
        return f"{self.family}/{self.style}"

    def _draw(self, rng: random.Random) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while len(out) < self.shots:  # without repeats until the pool is used up
            batch = list(self.pool)
            rng.shuffle(batch)
            out.extend(batch[: self.shots - len(out)])
        return out

    def build(self, behavior: Behavior, rng: random.Random) -> AttackCase:
        shots = self._draw(rng)
        if self.style == "inline":
            lines = [self.header, ""] + [f"User: {u}\nAssistant: {a}\n" for u, a in shots]
            lines.append(f"User: {behavior.request}\nAssistant:")
            chat = [{"role": "user", "content": "\n".join(lines)}]
        else:
            chat = [m for u, a in shots for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
            chat.append({"role": "user", "content": behavior.request})
        return AttackCase(case_id(self.name, behavior), self.family, self.name, behavior, chat,
                          meta={"shots": self.shots})


@dataclass
class InjectionAttack:
    """Indirect prompt injection: the user asks for something benign; the behavior arrives inside data."""

    kind: str  # "document" or "tool"
    text: dict[str, str]
    family: str = "injection"

    @property
    def name(self) -> str:
        return f"{self.family}/{self.kind}"

    def build(self, behavior: Behavior, rng: random.Random) -> AttackCase:
        t = self.text
        if self.kind == "document":
            doc = "\n\n".join([t["before"], fill(t["injected"], behavior), t["after"]])
            chat = [{"role": "user", "content": f"{t['request']}\n\n<document>\n{doc}\n</document>"}]
        elif self.kind == "tool":
            chat = [{"role": "system", "content": t["system"]}, {"role": "user", "content": t["request"]},
                    {"role": "assistant", "content": t["call"]},
                    {"role": "user", "content": fill(t["result"], behavior)}]
        else:
            raise ConfigError(f"injection kind must be document or tool, got {self.kind!r}")
        return AttackCase(case_id(self.name, behavior), self.family, self.name, behavior, chat)
