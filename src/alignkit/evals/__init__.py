"""Evaluation: tasks (data + how the model is asked + scorer + metrics with 95% CIs), the benchmark suites,
behavioral probes, judges, paired comparisons and the alignment tax.

    from alignkit.evals import EvalConfig, run_eval
    outcome = run_eval(EvalConfig(model="smollm2-135m-instruct", suite=["quick"], limit=50))

Importing this package is cheap; torch loads only when a model or a judge is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EvalConfig", "EvalOutcome", "run_eval", "Subject", "Task", "MultipleChoiceTask", "GenerationTask", "Item",
           "EvalContext", "Record", "Metric", "Judge", "JudgeRequest", "Verdict", "LoglikScorer", "LoglikRequest",
           "compare_runs", "get_task", "resolve_tasks", "TASKS", "SUITES"]

_WHERE = {
    "EvalConfig": "runner", "EvalOutcome": "runner", "run_eval": "runner", "Subject": "subject", "Task": "task",
    "MultipleChoiceTask": "task", "GenerationTask": "task", "Item": "task", "EvalContext": "task",
    "Record": "records", "Metric": "records", "Judge": "judge", "JudgeRequest": "judge", "Verdict": "judge",
    "LoglikScorer": "loglik", "LoglikRequest": "loglik", "compare_runs": "compare", "get_task": "registry",
    "resolve_tasks": "registry", "TASKS": "registry", "SUITES": "registry",
}


def __getattr__(name: str) -> Any:  # lazy: `import alignkit.evals` must not import torch
    if name in _WHERE:
        return getattr(importlib.import_module(f"alignkit.evals.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'alignkit.evals' has no attribute {name!r}")
