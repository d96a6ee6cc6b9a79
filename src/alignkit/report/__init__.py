"""Self-contained offline HTML reports of stored eval runs (`alignkit report`)."""

from alignkit.report.html import build_report, render_report

__all__ = ["build_report", "render_report"]
