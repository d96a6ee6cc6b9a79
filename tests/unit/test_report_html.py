"""The HTML report: self-contained, escaped, with the charts and drill-down it promises."""

from __future__ import annotations

import re

from alignkit.evals.benchmarks.xstest import XSTest
from alignkit.evals.records import Record
from alignkit.evals.registry import get_task
from alignkit.report import build_report
from alignkit.report.svg import Series, bar_chart, reliability_chart
from alignkit.store import ResultStore


def _store_run(store, run_id, acc, refusal_safe, asr):
    store.start_run(run_id, model=f"model-{run_id}", suite="x", config={"limit": 4, "seed": 0})
    arc = [Record("arc_easy", str(i), f"Question {i}", "<script>alert(1)</script>", float(a), {"acc": float(a),
                  "acc_norm": float(a)}, meta={"probs": [0.7, 0.1, 0.1, 0.1], "gold": 0 if a else 1})
           for i, a in enumerate(acc)]
    xs = [Record("xstest", str(i), "p", "o", float(r), {"refusal": float(r), "full_refusal": float(r),
                 "partial_refusal": 0.0}, meta={"label": "safe" if i < 2 else "unsafe", "type": "t"})
          for i, r in enumerate(refusal_safe)]
    hb = [Record("harmbench", str(i), "b", "o", float(x), {"asr": float(x), "refusal": 1 - float(x), "asr_prefix": 1.0},
                 meta={"category": "standard"}) for i, x in enumerate(asr)]
    store.add_records(run_id, arc + xs + hb)
    for task, recs in (("arc_easy", arc), ("xstest", xs), ("harmbench", hb)):
        store.set_aggregates(run_id, task, get_task(task).aggregate(recs))
    store.finish_run(run_id)


def test_report_is_self_contained_with_charts_and_drilldown(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        _store_run(store, "before", [1, 0, 1, 0], [1, 1, 1, 0], [1, 1, 0, 1])
        _store_run(store, "after", [1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 1])  # arc item 2 regresses
        path = build_report(store, ["before", "after"], tmp_path / "out" / "report.html")
    html = path.read_text()
    assert html.startswith("<!doctype html>") and html.count("<svg") >= 4
    for section in ("Headline metrics", "Before / after", "Harm vs over-refusal", "Reliability diagram",
                    "Failures, item by item", "(regression)"):
        assert section in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html)  # nothing fetched from the network


def test_single_run_report_and_failure_rules(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        _store_run(store, "only", [1, 0, 0, 0], [1, 0, 1, 1], [1, 0, 0, 0])
        html = build_report(store, ["latest"], tmp_path / "r.html").read_text()
    assert "arc_easy: 3 of 4 failed" in html and "xstest: 1 of 4 failed" in html
    over = Record("xstest", "1", "", "", 1.0, {"refusal": 1.0}, meta={"label": "safe"})
    assert XSTest().is_failure(over)


def test_svg_charts_draw_whiskers_and_skip_missing_values():
    svg = bar_chart(["a", "b"], [Series("run", [0.5, float("nan")], [0.4, float("nan")], [0.6, float("nan")])])
    assert svg.count("<rect") == 2  # one bar + one legend swatch
    assert svg.count("<line") > 6  # grid + whisker
    bins = [{"confidence": 0.55, "accuracy": 0.5, "count": 3}, {"confidence": 0.95, "accuracy": 0.9, "count": 0}]
    assert reliability_chart([("run", bins)]).count("<circle") == 1
