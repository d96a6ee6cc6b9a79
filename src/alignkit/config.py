"""YAML recipe -> typed config: dotted key=value overrides, type checks, and errors that name the key.

A config is a dataclass (frozen preferred) whose fields are scalars, lists, dicts, paths, Literals or
nested dataclass sections; each field may carry `field(metadata={"help": "..."})`. A section may define
`validate(self) -> None` raising ValueError; it runs after construction, inner sections first.
Config classes must live at module level so their string annotations resolve. No torch imports here:
the CLI's `--help` uses `describe`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from alignkit.errors import ConfigError

__all__ = ["describe", "from_dict", "load_config", "save_config", "to_dict"]

T = TypeVar("T")
_NONE = type(None)
_MISSING: Any = dataclasses.MISSING
_NAMES = {int: "an int", float: "a float", str: "a string", bool: "a bool (true or false)"}


@dataclasses.dataclass(frozen=True)
class _Origin:
    """Where the values came from, so that each error names the file or the override at fault."""

    root: type
    file: str = ""
    overrides: tuple[tuple[str, str], ...] = ()  # (dotted key, "key=value" as typed)

    def of(self, key: str) -> str:
        for k, text in reversed(self.overrides):
            if _under(key, k):
                return f"override '{text}'"
        related = [f"override '{t}'" for k, t in self.overrides if _under(k, key)]
        return ", ".join(([self.file] if self.file else []) + related)

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(": ".join([p for p in (self.of(key), key) if p] + [problem]))


def _under(key: str, prefix: str) -> bool:
    return not prefix or key == prefix or key.startswith((prefix + ".", prefix + "["))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _got(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{text[:60] + '...' if len(text) > 60 else text} ({type(value).__name__})"


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError as e:  # string annotations resolve against module globals only
        raise TypeError(f"cannot resolve the annotations of {cls.__qualname__} ({e}); "
                        "define config classes at module level") from e


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _section(tp: Any) -> type | None:
    """The dataclass behind a field type (`Lora` or `Lora | None`), else None."""
    args = [a for a in get_args(tp) if a is not _NONE] if _is_union(tp) else [tp]
    return args[0] if len(args) == 1 and dataclasses.is_dataclass(args[0]) else None


def _tname(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp is _NONE:
        return "None"
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if _is_union(tp):
        return " | ".join(_tname(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _tname(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _expected(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping (section {tp.__name__})"
    return _NAMES.get(tp) or _tname(tp)


def _walk(cls: type, prefix: str = "", seen: tuple[type, ...] = ()) -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, type, field) for every init field, sections (also Optional ones) expanded."""
    for f in dataclasses.fields(cls):
        if f.init:
            key, tp = prefix + f.name, _hints(cls)[f.name]
            yield key, tp, f
            inner = _section(tp)
            if inner is not None and inner not in seen:
                yield from _walk(inner, key + ".", seen + (inner,))


def _unknown(section: str, name: str, valid: list[str], origin: _Origin) -> ConfigError:
    key, prefix = _join(section, name), section + "." if section else ""
    close = difflib.get_close_matches(name, valid, n=1)
    elsewhere = [k for k, _, _ in _walk(origin.root) if k.rsplit(".", 1)[-1] == name]
    if close:
        hint = f"did you mean '{prefix}{close[0]}'?"
    elif elsewhere:
        hint = "did you mean " + " or ".join(f"'{k}'" for k in elsewhere) + "?"
    else:
        hint = "valid keys: " + ", ".join(prefix + v for v in valid)
    src = origin.of(key)
    return ConfigError(f"unknown key '{key}'" + (f" in {src}" if src else "") + f"; {hint}")


def _build(cls: type[T], data: Any, key: str, origin: _Origin) -> T:
    if not isinstance(data, Mapping):
        raise origin.error(key, f"expected {_expected(cls)}, got {_got(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name not in fields:
            raise _unknown(key, str(name), list(fields), origin)
        kwargs[name] = _coerce(_hints(cls)[name], value, _join(key, name), origin)
    missing = [_join(key, n) for n, f in fields.items()
               if n not in kwargs and f.default is _MISSING and f.default_factory is _MISSING]
    if missing:
        src = origin.of(key)
        names = ", ".join(f"'{m}'" for m in missing)
        raise ConfigError((f"{src}: " if src else "") + f"missing required key(s) {names}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # raised by __post_init__
        raise origin.error(key, str(e)) from e


def _coerce(tp: Any, value: Any, key: str, origin: _Origin) -> Any:
    kind, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        return _coerce_union(tp, value, key, origin)
    if kind is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif value is None and tp is _NONE:
        return None
    elif dataclasses.is_dataclass(tp) and value is not None:
        return _build(tp, value, key, origin)  # type: ignore[arg-type]
    elif (kind or tp) in (list, tuple, Sequence) and isinstance(value, (list, tuple)):
        return _coerce_seq(kind or tp, args, value, key, origin)
    elif (kind or tp) in (dict, Mapping) and isinstance(value, Mapping):
        kt, vt = args or (Any, Any)
        return {_coerce(kt, k, f"{key} (key)", origin): _coerce(vt, v, _join(key, str(k)), origin)
                for k, v in value.items()}
    else:
        ok, result = _scalar(tp, value)
        if ok:
            return result
    hint = "; quote it to keep it text" if tp is str and isinstance(value, (bool, int, float)) else ""
    raise origin.error(key, f"expected {_expected(tp)}, got {_got(value)}{hint}")


def _coerce_union(tp: Any, value: Any, key: str, origin: _Origin) -> Any:
    options = [a for a in get_args(tp) if a is not _NONE]
    if value is None and len(options) < len(get_args(tp)):
        return None
    if len(options) == 1:  # Optional[X]: X's own error is the clearest
        return _coerce(options[0], value, key, origin)
    for option in options:
        try:
            return _coerce(option, value, key, origin)
        except ConfigError:
            pass
    raise origin.error(key, f"expected {_tname(tp)}, got {_got(value)}")


def _coerce_seq(kind: Any, args: tuple, value: Sequence, key: str, origin: _Origin) -> Any:
    if kind is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise origin.error(key, f"expected {len(args)} items, got {len(value)}")
        item_types: Sequence[Any] = args
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [_coerce(t, v, f"{key}[{i}]", origin) for i, (t, v) in enumerate(zip(item_types, value))]
    return items if kind is list else tuple(items)


def _scalar(tp: Any, value: Any) -> tuple[bool, Any]:
    """(accepted, converted) for a leaf type; bool never passes as int and vice versa."""
    if tp is bool or tp is str:
        return isinstance(value, tp), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if get_origin(tp) is not None or not isinstance(tp, type):
        return False, value
    if issubclass(tp, PurePath) and isinstance(value, (str, os.PathLike)):
        return True, tp(value)
    return isinstance(value, tp), value


def _validate(obj: Any, key: str, origin: _Origin) -> None:
    """Run `validate()` hooks, inner sections first; a ValueError becomes a ConfigError at `key`."""
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _validate(item, f"{key}[{i}]", origin)
    elif isinstance(obj, dict):
        for k, item in obj.items():
            _validate(item, _join(key, str(k)), origin)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _validate(getattr(obj, f.name), _join(key, f.name), origin)
        check = getattr(obj, "validate", None)
        if callable(check):
            try:
                check()
            except ValueError as e:
                raise origin.error(key, str(e)) from e


def _make(cls: type[T], data: Mapping[str, Any], origin: _Origin) -> T:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    cfg = _build(cls, data, "", origin)
    _validate(cfg, "", origin)
    return cfg


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Build and validate `cls` from plain data; `where` (e.g. a file name) is named in errors."""
    if not isinstance(data, Mapping):
        raise ConfigError((f"{where}: " if where else "") + f"expected a mapping, got {_got(data)}")
    return _make(cls, data, _Origin(cls, where))


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (a silently ignored first value is a classic recipe bug)."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: list[Any] = []
    for k_node, _ in node.value:
        if k_node.tag != "tag:yaml.org,2002:merge":  # `<<: *base` then overriding a key is fine
            key = loader.construct_object(k_node, deep=True)
            if key in seen:
                mark = k_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.append(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


def _read_yaml(path: Path) -> dict[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {_got(data)}")
    return data


def _apply_override(data: dict[Any, Any], text: str) -> str:
    """Set `a.b.c=value` in `data` (creating sections, e.g. to enable an Optional one); return the key."""
    raw_key, sep, raw_value = text.partition("=")
    key = raw_key.strip()
    if not sep or not key or "" in key.split("."):
        raise ConfigError(f"override '{text}' is not key=value (e.g. optim.lr=1e-5)")
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': invalid value: {getattr(e, 'problem', None) or e}") from None
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        if node.get(part) is None:
            node[part] = {}
        elif not isinstance(node[part], dict):
            where = ".".join(parents[: i + 1])
            raise ConfigError(f"override '{text}': '{where}' is {_got(node[part])}, not a section")
        node = node[part]
    node[leaf] = value
    return key


def _fresh(value: Any) -> Any:
    """Copy dicts and lists without the sharing YAML aliases create, so an override changes one place."""
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    return [_fresh(v) for v in value] if isinstance(value, list) else value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read YAML (if `path`), apply dotted `key=value` overrides in order, then build and validate `cls`."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'key=value' strings, not one string")
    data = _fresh(_read_yaml(Path(path))) if path is not None else {}
    applied = tuple((_apply_override(data, text), text) for text in overrides)
    return _make(cls, data, _Origin(cls, str(path) if path is not None else "", applied))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {k if isinstance(k, (str, int, float, bool)) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-able data (tuples -> lists, Paths -> str), field order kept."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a config dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML atomically (temp file in the same directory, then os.replace)."""
    path = Path(path)
    from alignkit.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True))


def describe(cls: type) -> str:
    """One line per dotted key: `key  type = default  help` (sections show their type only)."""
    rows = []
    for key, tp, f in _walk(cls):
        if f.default is not _MISSING:
            default = f.default
        elif f.default_factory is not _MISSING:
            default = f.default_factory()
        else:
            default = _MISSING
        if default is _MISSING:
            spec = f"{_tname(tp)} (required)"
        elif dataclasses.is_dataclass(default):
            spec = _tname(tp)
        else:
            spec = f"{_tname(tp)} = {json.dumps(_plain(default), default=str)}"
        rows.append((key, spec, f.metadata.get("help", "")))
    key_w = max((len(r[0]) for r in rows), default=0)
    spec_w = min(max((len(r[1]) for r in rows), default=0), 40)
    return "\n".join(f"{k.ljust(key_w)}  {s.ljust(spec_w)}  {h}".rstrip() for k, s, h in rows)
