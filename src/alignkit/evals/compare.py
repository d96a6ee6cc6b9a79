"""Compare two stored runs item by item: deltas with 95% CIs and paired significance tests.

A metric that is a mean of per-item 0/1 scores is tested with McNemar's exact test on the items both runs
scored; other means use a paired bootstrap; derived metrics (bias scores, gaps) are recomputed by the
task's own `aggregate` on paired bootstrap resamples. `tax` is the same comparison restricted to the
capability benchmarks (base model vs aligned model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from alignkit.evals.metrics import Comparison, compare_paired, paired_bootstrap
from alignkit.evals.records import Metric, Record

if TYPE_CHECKING:
    from alignkit.store import ResultStore

__all__ = ["compare_runs", "compare_task", "format_comparison", "tax_summary", "DERIVED_BOOTSTRAP_SAMPLES"]

DERIVED_BOOTSTRAP_SAMPLES = 200  # each resample re-runs the task's aggregate, so fewer than for means


def _matches(record: Record, where: dict[str, object]) -> bool:
    return all(record.meta.get(k) == v for k, v in where.items())


def compare_task(task_name: str, a: Sequence[Record], b: Sequence[Record], metrics_a: dict[str, Metric],
                 metrics_b: dict[str, Metric], *, only: Sequence[str] | None = None) -> list[Comparison]:
    """Comparisons of every metric both runs report for one task (B minus A)."""
    by_id_a = {r.item_id: r for r in a}
    pairs = [(by_id_a[r.item_id], r) for r in b if r.item_id in by_id_a]
    out = []
    for name, mb in metrics_b.items():
        if name not in metrics_a or (only is not None and name not in only):
            continue
        if mb.key:
            chosen = [(ra, rb) for ra, rb in pairs if _matches(ra, mb.where)]
            va = [ra.scores.get(mb.key, math.nan) for ra, _ in chosen]
            vb = [rb.scores.get(mb.key, math.nan) for _, rb in chosen]
            out.append(compare_paired(name, va, vb, higher_is_better=mb.higher_is_better))
        else:
            out.append(_derived(task_name, name, pairs, mb.higher_is_better))
    return out


def _derived(task_name: str, metric: str, pairs: list[tuple[Record, Record]], better: bool | None) -> Comparison:
    from alignkit.evals.registry import TASKS, get_task

    if task_name not in TASKS or not pairs:
        return Comparison(metric, math.nan, math.nan, math.nan, math.nan, math.nan, 1.0, len(pairs), "none", better)
    task = get_task(task_name)
    ra = np.array([p[0] for p in pairs], dtype=object)
    rb = np.array([p[1] for p in pairs], dtype=object)

    def value(records: Sequence[Record]) -> float:
        metric_obj = task.aggregate(list(records), ci=False).get(metric)
        return metric_obj.value if metric_obj is not None else math.nan

    a_value, b_value = value(list(ra)), value(list(rb))
    lo, hi, p = paired_bootstrap(len(pairs), lambda idx: value(list(rb[idx])) - value(list(ra[idx])),
                                 samples=DERIVED_BOOTSTRAP_SAMPLES)
    return Comparison(metric, a_value, b_value, b_value - a_value, lo, hi, p, len(pairs), "paired-bootstrap", better)


def compare_runs(store: "ResultStore", run_a: str, run_b: str, *, tasks: Sequence[str] | None = None,
                 primary_only: bool = False) -> dict[str, list[Comparison]]:
    """Per task, the comparisons of run B against run A (tasks both runs have)."""
    from alignkit.evals.registry import TASKS, get_task

    id_a, id_b = store.run(run_a).run_id, store.run(run_b).run_id
    agg_a, agg_b = store.aggregates(id_a), store.aggregates(id_b)
    out = {}
    for task in [t for t in agg_b if t in agg_a and (tasks is None or t in tasks)]:
        only = [get_task(task).headline_metric] if primary_only and task in TASKS else None
        out[task] = compare_task(task, store.records(id_a, task), store.records(id_b, task), agg_a[task], agg_b[task],
                                 only=only)
    return out


def _arrow(c: Comparison) -> str:
    if not c.significant or c.higher_is_better is None or c.delta == 0 or math.isnan(c.delta):
        return ""
    return "better" if (c.delta > 0) == c.higher_is_better else "worse"


def format_comparison(results: dict[str, list[Comparison]], label_a: str = "A", label_b: str = "B") -> str:
    lines = [f"{'task':<22} {'metric':<26} {label_a[:9]:>9} {label_b[:9]:>9} {'delta':>8}  {'95% CI':<17} "
             f"{'p':>7}  {'test':<16} n"]
    for task, comps in results.items():
        for c in comps:
            ci = "" if math.isnan(c.lo) else f"[{c.lo:+.3f}, {c.hi:+.3f}]"
            star = "*" if c.significant else " "
            lines.append(f"{task:<22} {c.metric:<26} {c.a:>9.3f} {c.b:>9.3f} {c.delta:>+8.3f}  {ci:<17} "
                         f"{c.p:>7.4f}{star} {c.test:<16} {c.n} {_arrow(c)}".rstrip())
    lines.append("* p < 0.05 (paired: McNemar exact for 0/1 items, paired bootstrap otherwise)")
    return "\n".join(lines)


def tax_summary(results: dict[str, list[Comparison]]) -> dict[str, float]:
    """Mean change of the capability benchmarks' primary metrics, and how many dropped significantly."""
    deltas = [c.delta for comps in results.values() for c in comps if not math.isnan(c.delta)]
    worse = sum(1 for comps in results.values() for c in comps if _arrow(c) == "worse")
    better = sum(1 for comps in results.values() for c in comps if _arrow(c) == "better")
    return {"mean_delta": float(np.mean(deltas)) if deltas else math.nan, "benchmarks": len(deltas),
            "significantly_worse": worse, "significantly_better": better}
