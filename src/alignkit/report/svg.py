"""Small inline-SVG charts for the offline report: bars with CI whiskers, delta bars, a scatter with error
bars, and a reliability diagram. Plain strings, no plotting library, nothing fetched at view time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "bar_chart", "delta_chart", "scatter_chart", "reliability_chart", "PALETTE"]

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#EECA3B", "#9D755D"]
_FONT = 'font-family="system-ui, sans-serif"'


@dataclass
class Series:
    label: str
    values: Sequence[float]
    lo: Sequence[float]
    hi: Sequence[float]


def _ok(x: float) -> bool:
    return x is not None and not math.isnan(x)


def _text(x: float, y: float, s: str, size: int = 11, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" {_FONT} {extra}>{escape(s)}</text>'


def _axis_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = (hi - lo) / n
    return [lo + i * step for i in range(n + 1)]


def bar_chart(labels: Sequence[str], series: Sequence[Series], *, title: str = "", ymin: float = 0.0,
              ymax: float = 1.0, width: int = 900, height: int = 320) -> str:
    """Grouped vertical bars (one group per label, one bar per series) with 95% CI whiskers."""
    left, right, top, bottom = 110, 10, 44, 110
    plot_w, plot_h = width - left - right, height - top - bottom
    y = lambda v: top + plot_h * (1 - (min(max(v, ymin), ymax) - ymin) / (ymax - ymin))  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             _text(width / 2, 16, title, 13, extra='font-weight="600"')]
    for t in _axis_ticks(ymin, ymax):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e5e5e5"/>')
        parts.append(_text(left - 6, y(t) + 4, f"{t:.2g}", 10, "end"))
    group_w = plot_w / max(len(labels), 1)
    bar_w = min(28.0, group_w * 0.8 / max(len(series), 1))
    for g, label in enumerate(labels):
        x0 = left + g * group_w + (group_w - bar_w * len(series)) / 2
        for s, ser in enumerate(series):
            v = ser.values[g]
            if not _ok(v):
                continue
            x = x0 + s * bar_w
            base = y(max(ymin, 0.0) if ymin < 0 < ymax else ymin)
            top_y = y(v)
            parts.append(f'<rect x="{x:.1f}" y="{min(top_y, base):.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{abs(base - top_y):.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                         f'<title>{escape(ser.label)}: {escape(label)} = {v:.3f}</title></rect>')
            lo, hi = ser.lo[g], ser.hi[g]
            if _ok(lo) and _ok(hi):
                cx = x + (bar_w - 2) / 2
                parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(lo):.1f}" y2="{y(hi):.1f}" stroke="#222"/>')
                for yy in (y(lo), y(hi)):
                    parts.append(f'<line x1="{cx - 4:.1f}" x2="{cx + 4:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#222"/>')
        cx = left + g * group_w + group_w / 2
        parts.append(_text(cx, height - bottom + 14, label, 10, "end",
                           f'transform="rotate(-35 {cx:.1f} {height - bottom + 14:.1f})"'))
    parts += _legend([s.label for s in series], left, 34)
    parts.append("</svg>")
    return "".join(parts)


def _legend(labels: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, label in enumerate(labels):
        xx = x + i * 220
        out.append(f'<rect x="{xx}" y="{y - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        out.append(_text(xx + 14, y, label[:32], 10, "start"))
    return out


def delta_chart(rows: Sequence[tuple[str, float, float, float, str]], *, title: str = "", width: int = 900) -> str:
    """Horizontal bars of B - A with CI whiskers; color by verdict ("better", "worse", "" = not significant)."""
    row_h, left, right, top = 22, 260, 30, 30
    height = top + row_h * len(rows) + 30
    finite = [abs(v) for r in rows for v in r[1:4] if _ok(v)]
    span = max(finite + [0.05])
    x = lambda v: left + (width - left - right) * (0.5 + v / (2 * span))  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             _text(width / 2, 16, title, 13, extra='font-weight="600"'),
             f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 4}" y2="{height - 24}" stroke="#888"/>']
    colors = {"better": "#54A24B", "worse": "#E45756", "": "#9e9e9e"}
    for i, (label, delta, lo, hi, verdict) in enumerate(rows):
        yy = top + i * row_h
        parts.append(_text(left - 8, yy + 14, label, 11, "end"))
        if not _ok(delta):
            continue
        parts.append(f'<rect x="{min(x(0), x(delta)):.1f}" y="{yy + 4}" width="{abs(x(delta) - x(0)):.1f}" height="13" '
                     f'fill="{colors.get(verdict, "#9e9e9e")}"><title>{escape(label)}: {delta:+.3f}</title></rect>')
        if _ok(lo) and _ok(hi):
            parts.append(f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{yy + 10.5}" y2="{yy + 10.5}" stroke="#222"/>')
    for t in (-span, -span / 2, 0.0, span / 2, span):
        parts.append(_text(x(t), height - 8, f"{t:+.2g}", 10))
    parts.append("</svg>")
    return "".join(parts)


def scatter_chart(points: Sequence[tuple[str, float, float, float, float, float, float]], *, xlabel: str,
                  ylabel: str, title: str = "", width: int = 440, height: int = 380) -> str:
    """Points (label, x, y, x_lo, x_hi, y_lo, y_hi) on [0, 1] x [0, 1]; the ideal corner is (0, 0)."""
    left, right, top, bottom = 52, 16, 30, 46
    pw, ph = width - left - right, height - top - bottom
    sx = lambda v: left + pw * min(max(v, 0.0), 1.0)  # noqa: E731
    sy = lambda v: top + ph * (1 - min(max(v, 0.0), 1.0))  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             _text(width / 2, 16, title, 13, extra='font-weight="600"'),
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>',
             _text(sx(0) + 4, sy(0) - 6, "ideal", 10, "start", 'fill="#54A24B"')]
    for t in _axis_ticks(0, 1):
        parts.append(_text(sx(t), height - bottom + 14, f"{t:.1f}", 10))
        parts.append(_text(left - 6, sy(t) + 4, f"{t:.1f}", 10, "end"))
    parts.append(_text(left + pw / 2, height - 8, xlabel, 11))
    parts.append(_text(14, top + ph / 2, ylabel, 11, extra=f'transform="rotate(-90 14 {top + ph / 2:.1f})"'))
    for i, (label, x, y, xlo, xhi, ylo, yhi) in enumerate(points):
        if not (_ok(x) and _ok(y)):
            continue
        color = PALETTE[i % len(PALETTE)]
        if _ok(xlo) and _ok(xhi):
            parts.append(f'<line x1="{sx(xlo):.1f}" x2="{sx(xhi):.1f}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="{color}"/>')
        if _ok(ylo) and _ok(yhi):
            parts.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(ylo):.1f}" y2="{sy(yhi):.1f}" stroke="{color}"/>')
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="{color}"><title>{escape(label)}: '
                     f'{xlabel} {x:.3f}, {ylabel} {y:.3f}</title></circle>')
        parts.append(_text(sx(x) + 9, sy(y) - 8, label[:28], 10, "start"))
    parts.append("</svg>")
    return "".join(parts)


def reliability_chart(series: Sequence[tuple[str, Sequence[dict[str, float]]]], *, title: str = "",
                      width: int = 440, height: int = 380) -> str:
    """Accuracy vs confidence per bin (dots sized by count, joined by lines), with the diagonal."""
    left, right, top, bottom = 52, 16, 30, 46
    pw, ph = width - left - right, height - top - bottom
    sx = lambda v: left + pw * v  # noqa: E731
    sy = lambda v: top + ph * (1 - v)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             _text(width / 2, 16, title, 13, extra='font-weight="600"'),
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>',
             f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="#999" stroke-dasharray="4 3"/>']
    for t in _axis_ticks(0, 1):
        parts.append(_text(sx(t), height - bottom + 14, f"{t:.1f}", 10))
        parts.append(_text(left - 6, sy(t) + 4, f"{t:.1f}", 10, "end"))
    parts.append(_text(left + pw / 2, height - 8, "confidence", 11))
    parts.append(_text(14, top + ph / 2, "accuracy", 11, extra=f'transform="rotate(-90 14 {top + ph / 2:.1f})"'))
    for i, (label, bins) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = [(b["confidence"], b["accuracy"], b["count"]) for b in bins if b["count"]]
        if len(pts) > 1:
            path = " ".join(f"{sx(c):.1f},{sy(a):.1f}" for c, a, _ in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        total = sum(n for _, _, n in pts) or 1
        for c, a, n in pts:
            r = 3 + 9 * math.sqrt(n / total)
            parts.append(f'<circle cx="{sx(c):.1f}" cy="{sy(a):.1f}" r="{r:.1f}" fill="{color}" fill-opacity="0.6">'
                         f'<title>{escape(label)}: conf {c:.2f}, acc {a:.2f}, n={n}</title></circle>')
    parts += _legend([s[0] for s in series], left + 6, top + 14)
    parts.append("</svg>")
    return "".join(parts)
