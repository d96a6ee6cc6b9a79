"""Errors users see. Each names the file, line, record or field at fault and what was expected."""

from __future__ import annotations

__all__ = ["AlignkitError", "ConfigError", "DataError", "ModelError"]


class AlignkitError(Exception):
    """Base class: the CLI prints these as one clean message instead of a traceback."""


class ConfigError(AlignkitError):
    """A recipe or override is invalid (unknown key, wrong type, bad value)."""


class ModelError(AlignkitError):
    """A model could not be resolved or loaded."""


class DataError(AlignkitError):
    """A data record is invalid. `where` is e.g. 'prefs.jsonl:17' or 'my/dataset[train][42]'."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")
