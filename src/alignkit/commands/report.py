"""`alignkit report [RUN ...]`: a self-contained HTML report of stored eval runs."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

EPILOG = """\
examples:
  alignkit report                                   # the latest run -> runs/report.html
  alignkit report latest~1 latest -o runs/before_after.html   # baseline first: deltas, regressions
  alignkit report smollm2-135m-instruct-all-1a2b3c4d --db runs/alignkit.db

The file has no external references (inline CSS and SVG): open it offline or attach it to a PR.
With several runs, the first is the baseline: deltas and paired significance compare the last to it.
"""


def _report(args: argparse.Namespace) -> int:
    from alignkit.report import build_report
    from alignkit.store import ResultStore

    with ResultStore(args.db) as store:
        refs = args.runs or ["latest"]
        path = build_report(store, refs, args.output)
    print(f"report written to {path} ({path.stat().st_size / 1024:.0f} KiB); open it in any browser")
    return 0


def register(sub: Any) -> None:
    rep = sub.add_parser("report", help="HTML report of stored eval runs (offline, self-contained)",
                         description="Render stored eval runs as one HTML file.", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    rep.add_argument("runs", nargs="*", help="run ids, unique prefixes, latest or latest~N (default: latest)")
    rep.add_argument("--db", help="results database (default ALIGNKIT_DB or runs/alignkit.db)")
    rep.add_argument("--output", "-o", default="runs/report.html", help="where to write the HTML")
    rep.set_defaults(func=_report)
