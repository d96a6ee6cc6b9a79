"""Plain-text table printing shared by the benchmark scripts (run as `python benchmarks/NAME.py`, so this
directory is on sys.path)."""

from __future__ import annotations


def print_rows(cols: list[str], rows: list[list[str]]) -> None:
    """Left-aligned columns, a dashed rule under the header, a blank line before and after."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    print()
