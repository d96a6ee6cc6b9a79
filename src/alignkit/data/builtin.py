"""Data sets that ship inside the package, addressed as `builtin:NAME`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alignkit.errors import DataError

__all__ = ["BUILTIN_DATA", "resolve_data"]

BUILTIN_DATA = {
    "quickstart": "quickstart_train.jsonl",
    "quickstart-heldout": "quickstart_heldout.jsonl",
}


def resolve_data(spec: str) -> str:
    """Return a loadable spec: `builtin:NAME` becomes the packaged file's path; others pass through."""
    if not spec.startswith("builtin:"):
        return spec
    name = spec.split(":", 1)[1]
    if name not in BUILTIN_DATA:
        raise DataError(spec, f"unknown built-in data set {name!r}; available: {', '.join(sorted(BUILTIN_DATA))}")
    return str(Path(str(resources.files("alignkit") / "resources" / BUILTIN_DATA[name])))
