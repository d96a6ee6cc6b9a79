"""The constitution: one YAML file of principles and a hazard taxonomy that drives critique and revision
(Constitutional AI), AI preference judging (RLAIF), guard rails, red-team scoring and the system prompt.

File format (see `resources/constitution.yaml`, the shipped default):

    name: my-constitution
    version: "1.0"
    preamble: You are a helpful, honest and harmless assistant ...
    hazards:
      - {id: violent_crimes, name: Violent crimes, description: ..., code: S1}   # code optional
    principles:
      - id: no_harm
        name: Do no serious harm
        rule: ...            # optional one-sentence form for the system prompt (defaults to the name)
        critique: ...        # asks a model to find faults in a response
        revision: ...        # asks it to rewrite the response
        comparison: ...      # asks a judge which of two responses is better
        hazards: [violent_crimes]   # ids from `hazards`; [] for principles that apply everywhere

Errors name the file, the line and the field path ("constitution.yaml:42: principles[3].revision is
missing"). No torch here: guard rails and the CLI import this module cheaply.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from alignkit.errors import ConfigError

__all__ = [
    "HAZARD_IDS",
    "Constitution",
    "Hazard",
    "Principle",
    "UnknownIdError",
    "default_constitution",
    "default_constitution_path",
    "load_constitution",
    "parse_constitution",
]

# The 14-category taxonomy (same categories as MLCommons / Llama Guard 3, S1..S14, in this order).
HAZARD_IDS = (
    "violent_crimes", "non_violent_crimes", "sex_crimes", "child_exploitation", "defamation",
    "specialized_advice", "privacy", "intellectual_property", "indiscriminate_weapons", "hate",
    "self_harm", "sexual_content", "elections", "code_interpreter_abuse",
)

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_TOP = ("name", "version", "preamble", "hazards", "principles")
_HAZARD_KEYS = ("id", "name", "description", "code")
_PRINCIPLE_KEYS = ("id", "name", "rule", "critique", "revision", "comparison", "hazards")
_OPTIONAL = {"code", "rule"}


class UnknownIdError(ConfigError, KeyError):
    """A principle or hazard id that the constitution does not define (also a KeyError for callers)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Hazard:
    id: str
    name: str
    description: str
    code: str = ""  # short label used by guard prompts, e.g. "S1"


@dataclass(frozen=True)
class Principle:
    id: str
    name: str
    critique: str  # critique request: "Identify ways in which the response ..."
    revision: str  # revision request: "Rewrite the response to ..."
    comparison: str  # judge question: "Which of these responses ...?"
    hazards: tuple[str, ...]  # hazard ids this principle covers; () = applies to every request
    rule: str = ""  # one sentence for the system prompt; falls back to the name

    @property
    def statement(self) -> str:
        return self.rule or self.name


@dataclass(frozen=True)
class Constitution:
    name: str
    version: str
    principles: tuple[Principle, ...]
    hazards: tuple[Hazard, ...]
    preamble: str
    source: str = ""  # the file it came from, for messages and provenance records

    def system_prompt(self, include_hazards: bool = True) -> str:
        """The constitution as a system prompt: preamble, one line per principle, then the hazards."""
        parts = [self.preamble.strip(), "Follow these principles:"]
        parts[-1] += "".join(f"\n- {p.name}: {p.statement}" for p in self.principles)
        if include_hazards and self.hazards:
            parts.append("Do not help cause harm in these categories:"
                         + "".join(f"\n- {h.name}: {h.description}" for h in self.hazards))
        return "\n\n".join(parts)

    def hazard_block(self) -> str:
        """Hazards as coded lines ("S1: Violent crimes. ...") for classifier and guard prompts."""
        return "\n".join(f"{h.code}: {h.name}. {h.description}" for h in self.hazards)

    def principle(self, id: str) -> Principle:  # noqa: A002 - the contract's name
        for p in self.principles:
            if p.id == id:
                return p
        raise _unknown("principle", id, [p.id for p in self.principles], self.source)

    def hazard(self, id: str) -> Hazard:  # noqa: A002
        for h in self.hazards:
            if h.id == id or h.code == id:
                return h
        raise _unknown("hazard", id, [h.id for h in self.hazards], self.source)

    def principles_for(self, hazard_id: str) -> tuple[Principle, ...]:
        """Principles that list this hazard (the general ones with no hazards are not included)."""
        hazard = self.hazard(hazard_id)  # validates the id
        return tuple(p for p in self.principles if hazard.id in p.hazards)

    @property
    def principle_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.principles)

    @property
    def hazard_ids(self) -> tuple[str, ...]:
        return tuple(h.id for h in self.hazards)


def _unknown(kind: str, id: str, valid: list[str], source: str) -> UnknownIdError:  # noqa: A002
    close = difflib.get_close_matches(str(id), valid, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "known: " + ", ".join(valid)
    where = f" in {source}" if source else ""
    return UnknownIdError(f"unknown {kind} id '{id}'{where}; {hint}")


# ---- parsing ---------------------------------------------------------------------------------------


class _Lines:
    """Field path -> 1-based line, from the YAML node tree, so errors can point at the line."""

    def __init__(self, where: str, node: yaml.Node | None) -> None:
        self.where, self.lines = where, {}
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, path: str) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                sub = f"{path}.{key}" if path else key
                if key in seen:  # PyYAML silently keeps the last value; a constitution must not
                    raise ConfigError(f"{self.where}:{key_node.start_mark.line + 1}: {sub} is given twice")
                seen.add(key)
                self._walk(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, f"{path}[{i}]")

    def error(self, path: str, problem: str) -> ConfigError:
        probe = path
        while probe and probe not in self.lines:  # a missing key: point at its parent mapping
            shorter = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", probe)
            probe = shorter if shorter != probe else ""
        line = self.lines.get(probe)
        return ConfigError(f"{self.where}{f':{line}' if line else ''}: {path or 'the file'} {problem}")


def _text(data: dict[str, Any], key: str, path: str, lines: _Lines, optional: bool = False) -> str:
    value = data.get(key)
    if value is None:
        if optional:
            return ""
        raise lines.error(f"{path}{key}", "is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise lines.error(f"{path}{key}", f"must be text, got {type(value).__name__}")
    text = " ".join(str(value).split()) if key != "preamble" else str(value).strip()
    if not text:
        raise lines.error(f"{path}{key}", "is empty")
    return text


def _mapping(value: Any, path: str, allowed: tuple[str, ...], lines: _Lines) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise lines.error(path, f"must be a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "allowed: " + ", ".join(allowed)
            raise lines.error(f"{path}.{key}" if path else str(key), f"is not a known field; {hint}")
    return value


def _items(data: dict[str, Any], key: str, lines: _Lines) -> list[Any]:
    value = data.get(key)
    if value is None:
        raise lines.error(key, "is missing")
    if not isinstance(value, list):
        raise lines.error(key, f"must be a list, got {type(value).__name__}")
    if not value:
        raise lines.error(key, "is empty")
    return value


def _ident(data: dict[str, Any], path: str, seen: set[str], lines: _Lines) -> str:
    ident = _text(data, "id", path, lines)
    if not _ID.match(ident):
        raise lines.error(f"{path}id", f"'{ident}' must be snake_case (lowercase letters, digits, _)")
    if ident in seen:
        raise lines.error(f"{path}id", f"'{ident}' is a duplicate id")
    seen.add(ident)
    return ident


def _hazards(data: dict[str, Any], lines: _Lines) -> tuple[Hazard, ...]:
    out, seen, codes = [], set(), set()
    for i, raw in enumerate(_items(data, "hazards", lines)):
        path = f"hazards[{i}]"
        item = _mapping(raw, path, _HAZARD_KEYS, lines)
        ident = _ident(item, path + ".", seen, lines)
        code = _text(item, "code", path + ".", lines, optional=True) or f"S{i + 1}"
        if code in codes:
            raise lines.error(f"{path}.code", f"'{code}' is a duplicate code")
        codes.add(code)
        out.append(Hazard(ident, _text(item, "name", path + ".", lines),
                          _text(item, "description", path + ".", lines), code))
    return tuple(out)


def _principle_hazards(item: dict[str, Any], path: str, known: tuple[str, ...], lines: _Lines) -> tuple[str, ...]:
    value = item.get("hazards")
    if value is None:
        raise lines.error(f"{path}.hazards", "is missing (use [] for a principle that applies everywhere)")
    if not isinstance(value, list):
        raise lines.error(f"{path}.hazards", f"must be a list of hazard ids, got {type(value).__name__}")
    for j, hid in enumerate(value):
        if hid not in known:
            close = difflib.get_close_matches(str(hid), known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "known: " + ", ".join(known)
            raise lines.error(f"{path}.hazards[{j}]", f"'{hid}' is not a hazard defined in this file; {hint}")
    if len(set(value)) != len(value):
        raise lines.error(f"{path}.hazards", "lists a hazard twice")
    return tuple(value)


def _principles(data: dict[str, Any], known: tuple[str, ...], lines: _Lines) -> tuple[Principle, ...]:
    out, seen = [], set()
    for i, raw in enumerate(_items(data, "principles", lines)):
        path = f"principles[{i}]"
        item = _mapping(raw, path, _PRINCIPLE_KEYS, lines)
        ident = _ident(item, path + ".", seen, lines)
        fields = {k: _text(item, k, path + ".", lines, optional=k in _OPTIONAL)
                  for k in ("name", "critique", "revision", "comparison", "rule")}
        out.append(Principle(id=ident, hazards=_principle_hazards(item, path, known, lines), **fields))
    return tuple(out)


def parse_constitution(text: str, where: str = "<constitution>") -> Constitution:
    """Build a Constitution from YAML text; `where` (a file name) prefixes every error."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise ConfigError(f"{at}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    lines = _Lines(where, node)
    if data is None:
        raise ConfigError(f"{where}: the file is empty; expected the keys {', '.join(_TOP)}")
    data = _mapping(data, "", _TOP, lines)
    hazards = _hazards(data, lines)
    return Constitution(
        name=_text(data, "name", "", lines),
        version=_text(data, "version", "", lines),
        preamble=_text(data, "preamble", "", lines),
        hazards=hazards,
        principles=_principles(data, tuple(h.id for h in hazards), lines),
        source=where,
    )


def default_constitution_path() -> Path:
    return Path(__file__).resolve().parent.parent / "resources" / "constitution.yaml"


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, shown: str) -> Constitution:
    del mtime_ns  # part of the cache key only: an edited file is read again
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read constitution {shown}: {e}") from None
    return parse_constitution(text, where=shown)


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Read and validate a constitution YAML file; None -> the shipped default."""
    file = Path(path) if path is not None else default_constitution_path()
    if not file.is_file():
        raise ConfigError(f"constitution file not found: {file}")
    return _load_cached(str(file.resolve()), file.stat().st_mtime_ns, str(file))


def default_constitution() -> Constitution:
    """The shipped default: helpful, honest, harmless-but-non-evasive, with the 14-hazard taxonomy."""
    return load_constitution(None)
