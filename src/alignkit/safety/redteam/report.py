"""`alignkit redteam report`: one self-contained HTML page (inline CSS and SVG) for one or more red-team
runs: the judge's audited accuracy beside the headline ASR, ASR per family and per hazard category with
95% CIs, ASR per attack, the before/after (or unguarded/guarded) change with paired tests when two runs
are given, and the successful attacks' transcripts. Uses the eval report's SVG charts."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignkit.evals.records import Metric, Record
from alignkit.report.svg import Series, bar_chart

if TYPE_CHECKING:
    from alignkit.store import ResultStore, RunInfo

__all__ = ["render_redteam_report", "build_redteam_report", "SUCCESSES_SHOWN"]

SUCCESSES_SHOWN = 12  # per family
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1000px;color:#222;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:30px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px}th,td{border-bottom:1px solid #eee;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777;font-size:12px}.audit{background:#f4f8fb;border:1px solid #d6e4ef;padding:8px 12px;margin:10px 0}
details{margin:4px 0 8px}summary{cursor:pointer;font-weight:600;font-size:13.5px}
pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:6px;margin:2px 0;max-height:240px;overflow:auto}
"""


def _fmt(m: Metric | None) -> str:
    if m is None or math.isnan(m.value):
        return "—"
    ci = "" if math.isnan(m.lo) else f" <span class=muted>[{m.lo:.2f}, {m.hi:.2f}]</span>"
    return f"{m.value:.3f}{ci}"


def _label(run: "RunInfo") -> str:
    guard = " + guard" if run.config.get("guard") else ""
    return f"{run.model}{guard} ({run.run_id[-8:]})"


def render_redteam_report(store: "ResultStore", run_refs: Sequence[str]) -> str:
    """The HTML text for `run_refs` (the first is the baseline when there are several)."""
    runs = [store.run(ref) for ref in run_refs]
    aggs = {r.run_id: store.aggregates(r.run_id) for r in runs}
    missing = [r.run_id for r in runs if "redteam" not in aggs[r.run_id]]
    if missing:
        from alignkit.errors import AlignkitError

        raise AlignkitError(f"not red-team runs (no 'redteam' aggregates): {', '.join(missing)}")
    labels = [_label(r) for r in runs]
    overall = [aggs[r.run_id]["redteam"] for r in runs]
    body = [f"<h1>alignkit red-team report</h1><p class=muted>generated {time.strftime('%Y-%m-%d %H:%M')} from "
            f"{escape(str(store.path))}</p>", _runs_table(runs, store), _audit(overall, labels),
            _headline(overall, labels), _chart(overall, labels, "asr_family_", "ASR by attack family (95% CI)"),
            _chart(overall, labels, "asr_hazard_", "ASR by hazard category (95% CI)"), _attacks(runs, aggs, labels)]
    if len(runs) > 1:
        body.append(_paired(store, runs[0].run_id, runs[-1].run_id, labels[0], labels[-1]))
    body.append(_successes(store, runs[-1].run_id))
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>alignkit red-team report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")


def build_redteam_report(store: "ResultStore", run_refs: Sequence[str], out: str | Path) -> Path:
    from alignkit.feedback.io import atomic_write_text

    return atomic_write_text(out, render_redteam_report(store, run_refs))


def _runs_table(runs: Sequence["RunInfo"], store: "ResultStore") -> str:
    rows = []
    for r in runs:
        c = r.config
        rows.append(f"<tr><td>{escape(r.run_id)}</td><td>{escape(r.model)}</td><td>{escape(str(c.get('guard')))}</td>"
                    f"<td>{escape(str(c.get('judge')))}</td><td class=num>{store.count_records(r.run_id)}</td>"
                    f"<td>behaviors={escape(str(c.get('behaviors')))} limit={c.get('limit')} seed={c.get('seed')} "
                    f"max_new_tokens={c.get('max_new_tokens')} families={escape(','.join(c.get('families') or []))}"
                    f"</td></tr>")
    return ("<h2>Runs</h2><table><tr><th>run</th><th>target</th><th>guard</th><th>judge</th><th>cases</th>"
            f"<th>settings</th></tr>{''.join(rows)}</table>")


def _audit(overall: Sequence[dict[str, Metric]], labels: Sequence[str]) -> str:
    notes = []
    for agg, label in zip(overall, labels):
        acc = agg.get("judge_accuracy")
        if acc is None:
            notes.append(f"{escape(label)}: judge not audited")
            continue
        sens, spec = agg.get("judge_sensitivity"), agg.get("judge_specificity")
        notes.append(f"{escape(label)}: the judge labels harmful replies correctly {_fmt(acc)} of the time on "
                     f"{acc.n} held-out labeled replies (sensitivity {sens.value if sens else math.nan:.2f}, "
                     f"specificity {spec.value if spec else math.nan:.2f})")
    return ("<div class=audit><b>How much to trust these numbers.</b> Every ASR below is the judge's verdict. "
            + "<br>".join(notes) + ". The judge-corrected ASR removes the judge's measured error rates "
            "(Rogan-Gladen); its interval covers sampling error only.</div>")


def _headline(overall: Sequence[dict[str, Metric]], labels: Sequence[str]) -> str:
    names = [("asr", "ASR, all attacks"), ("asr_corrected", "ASR, judge-corrected"),
             ("behaviors_broken", "behaviors broken by at least one attack"),
             ("over_refusal", "XSTest safe prompts refused (control)")]
    head = "".join(f"<th>{escape(lbl)}</th>" for lbl in labels)
    rows = "".join(f"<tr><td>{escape(title)}</td>" + "".join(f"<td class=num>{_fmt(a.get(key))}</td>" for a in overall)
                   + "</tr>" for key, title in names if any(key in a for a in overall))
    return f"<h2>Headline</h2><table><tr><th></th>{head}</tr>{rows}</table>"


def _chart(overall: Sequence[dict[str, Metric]], labels: Sequence[str], prefix: str, title: str) -> str:
    keys: list[str] = []
    for a in overall:
        keys += [k for k in a if k.startswith(prefix) and k not in keys]
    if not keys:
        return ""
    series = [Series(lbl, [a[k].value if k in a else math.nan for k in keys],
                     [a[k].lo if k in a else math.nan for k in keys], [a[k].hi if k in a else math.nan for k in keys])
              for a, lbl in zip(overall, labels)]
    rows = "".join(f"<tr><td>{escape(k[len(prefix):])}</td>" + "".join(
        f"<td class=num>{_fmt(a.get(k))}</td><td class=num>{a[k].n if k in a else ''}</td>" for a in overall) + "</tr>"
                   for k in keys)
    head = "".join(f"<th>{escape(lbl)}</th><th>n</th>" for lbl in labels)
    chart = bar_chart([k[len(prefix):] for k in keys], series, title=title, width=max(520, 90 * len(keys) + 120))
    return f"<h2>{escape(title)}</h2>{chart}<table><tr><th></th>{head}</tr>{rows}</table>"


def _attacks(runs: Sequence["RunInfo"], aggs: dict[str, dict[str, dict[str, Metric]]], labels: Sequence[str]) -> str:
    keys: list[tuple[str, str]] = []
    for r in runs:
        for task, metrics in aggs[r.run_id].items():
            keys += [(task, k) for k in metrics if k.startswith("asr:") and (task, k) not in keys]
    head = "".join(f"<th>{escape(lbl)}</th><th>n</th>" for lbl in labels)
    rows = "".join(f"<tr><td>{escape(k[4:])}</td>" + "".join(
        f"<td class=num>{_fmt(aggs[r.run_id].get(task, {}).get(k))}</td><td class=num>"
        f"{getattr(aggs[r.run_id].get(task, {}).get(k), 'n', '')}</td>" for r in runs) + "</tr>" for task, k in keys)
    return f"<h2>ASR by attack</h2><table><tr><th>attack</th>{head}</tr>{rows}</table>"


def _paired(store: "ResultStore", first: str, last: str, label_a: str, label_b: str) -> str:
    from alignkit.errors import AlignkitError
    from alignkit.safety.redteam.export import compare_runs

    try:
        result = compare_runs(store, first, last)
    except AlignkitError as exc:
        return f"<h2>Change</h2><p class=muted>{escape(str(exc))}</p>"
    rows = "".join(f"<tr><td>{escape(r['group'])}</td><td class=num>{r['n']}</td><td class=num>{r['before']:.3f}</td>"
                   f"<td class=num>{r['after']:.3f}</td><td class=num>{r['delta']:+.3f}</td><td class=num>{r['p']:.3f}"
                   f"</td><td class=num>{r['complied_before']:.3f}</td><td class=num>{r['complied_after']:.3f}</td>"
                   f"<td class=num>{r['complied_delta']:+.3f}</td><td class=num>{r['complied_p']:.3f}</td></tr>"
                   for r in result["rows"])
    c = result.get("control")
    control = (f"<p>XSTest safe prompts refused: {c['before']:.3f} → {c['after']:.3f} (n={c['n']}, p={c['p']:.3f})</p>"
               if c else "")
    return (f"<h2>Change: {escape(label_a)} → {escape(label_b)}</h2><p class=muted>{result['cases']} attack cases "
            "present in both runs, paired; p from McNemar's exact test. ASR: the judge's harm rubric; complied: the "
            "target did not refuse (the judge's refusal rubric).</p><table><tr><th>family</th><th>n</th>"
            "<th>ASR before</th><th>ASR after</th><th>change</th><th>p</th><th>complied before</th>"
            f"<th>complied after</th><th>change</th><th>p</th></tr>{rows}</table>{control}")


def _transcript(r: Record) -> str:
    turns: list[dict[str, Any]] = r.meta.get("transcript") or []
    text = "\n\n".join(f"[{m.get('role')}] {m.get('content', '')[:1200]}" for m in turns[-6:])
    guard = f" guard={r.meta.get('guard')}" if r.meta.get("guard") else ""
    return (f"<pre>{escape(text)}</pre><p class=muted>behavior {escape(str(r.meta.get('behavior_id')))} "
            f"({escape(str(r.meta.get('hazard')))}); P(harmful)={r.meta.get('p_harmful')}; "
            f"{escape(str(r.meta.get('judge_reason', '')))}{escape(guard)}</p>")


def _successes(store: "ResultStore", run_id: str) -> str:
    from alignkit.safety.redteam.export import attack_records

    records = [r for r in attack_records(store, run_id) if r.scores.get("asr") == 1.0]
    out = [f"<h2>Successful attacks</h2><p class=muted>{len(records)} transcripts the judge labeled harmful in "
           f"{escape(run_id)} (up to {SUCCESSES_SHOWN} per family; all of them are in the results store).</p>"]
    by_family: dict[str, list[Record]] = {}
    for r in records:
        by_family.setdefault(str(r.meta.get("family")), []).append(r)
    for family, recs in by_family.items():
        items = "".join(f"<details><summary>{escape(str(r.meta.get('attack')))} @ "
                        f"{escape(str(r.meta.get('behavior_id')))}</summary>{_transcript(r)}</details>"
                        for r in recs[:SUCCESSES_SHOWN])
        out.append(f"<details><summary>{escape(family)}: {len(recs)}</summary>{items}</details>")
    return "".join(out)
