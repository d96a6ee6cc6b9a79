"""`alignkit annotate stats`: agreement between people, and how each annotator works.

Agreement is computed on labels in item terms (response 1, response 2, tie, both bad), so the
randomized on-screen order cannot inflate or hide it. Position bias is computed on the on-screen
choice: with a random order per item, an unbiased annotator picks A in half of their A/B decisions.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from typing import Any

from alignkit.annotate.agreement import (binomial_two_sided_p, category_table, cohen_kappa, fleiss_kappa,
                                         wilson_interval)
from alignkit.annotate.dataset import majority
from alignkit.annotate.store import AnnotationStore

__all__ = ["compute_stats", "format_stats", "LABELS"]

LABELS = ("1", "2", "tie", "both_bad")


def compute_stats(store: AnnotationStore) -> dict[str, Any]:
    """Everything `stats` prints, as plain data (also served as JSON on the admin page)."""
    judgments, items = store.judgments(), store.items()
    by_item: dict[int, dict[str, str]] = {}  # item -> annotator -> winner
    for j in judgments:
        by_item.setdefault(j["item_id"], {})[j["annotator"]] = j["winner"]
    overlap = store.overlap
    multi = [votes for votes in by_item.values() if len(votes) >= 2]
    return {
        "items": len(items),
        "items_judged": len(by_item),
        "items_complete": sum(len(v) >= overlap for v in by_item.values()),
        "overlap": overlap,
        "judgments": len(judgments),
        "labels": dict(Counter(j["winner"] for j in judgments)),
        "fleiss_kappa": _nan_to_none(fleiss_kappa(category_table([list(v.values()) for v in multi], LABELS))),
        "fleiss_items": len(multi),
        "cohen": _pairwise_cohen(by_item),
        "annotators": [_annotator(name, judgments, by_item, items, store.skips().get(name, 0))
                       for name in store.annotators()],
    }


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _pairwise_cohen(by_item: dict[int, dict[str, str]]) -> list[dict[str, Any]]:
    names = sorted({name for votes in by_item.values() for name in votes})
    out = []
    for a, b in itertools.combinations(names, 2):
        shared = [votes for votes in by_item.values() if a in votes and b in votes]
        if shared:
            kappa = cohen_kappa([v[a] for v in shared], [v[b] for v in shared])
            agree = sum(v[a] == v[b] for v in shared) / len(shared)
            out.append({"a": a, "b": b, "shared_items": len(shared), "kappa": _nan_to_none(kappa), "agreement": agree})
    return out


def _annotator(name: str, judgments: list[dict[str, Any]], by_item: dict[int, dict[str, str]],
               items: dict[int, dict[str, Any]], skipped: int) -> dict[str, Any]:
    mine = [j for j in judgments if j["annotator"] == name]
    ab = [j["choice"] for j in mine if j["choice"] in ("A", "B")]
    n_a = ab.count("A")
    seconds = [j["time_spent_ms"] / 1000 for j in mine]
    # agreement with the majority of the *other* annotators of the same item
    with_others = []
    for j in mine:
        others = [w for who, w in by_item[j["item_id"]].items() if who != name]
        label, _ = majority(others)
        if label is not None:
            with_others.append(j["winner"] == label)
    priors = [j["winner"] == items[j["item_id"]]["meta"].get("prior_winner")
              for j in mine if j["winner"] in ("1", "2") and items[j["item_id"]]["meta"].get("prior_winner")]
    low, high = wilson_interval(n_a, len(ab))
    return {
        "name": name, "judged": len(mine), "skipped": skipped,
        "median_s": statistics.median(seconds) if seconds else None,
        "total_min": sum(seconds) / 60,
        "share_a": n_a / len(ab) if ab else None, "share_a_ci": [low, high] if ab else None,
        "position_p": binomial_two_sided_p(n_a, len(ab)) if ab else None,
        "tie_rate": sum(j["winner"] == "tie" for j in mine) / len(mine) if mine else None,
        "both_bad_rate": sum(j["winner"] == "both_bad" for j in mine) / len(mine) if mine else None,
        "agree_with_others": sum(with_others) / len(with_others) if with_others else None,
        "agree_with_prior": sum(priors) / len(priors) if priors else None,
    }


def _f(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def format_stats(s: dict[str, Any]) -> str:
    """The human-readable table `alignkit annotate stats` prints."""
    names = {"1": "response 1", "2": "response 2", "tie": "tie", "both_bad": "both bad"}
    labels = ", ".join(f"{names[k]}: {s['labels'][k]}" for k in LABELS if k in s["labels"])
    lines = [
        f"items: {s['items']} ({s['items_judged']} judged, {s['items_complete']} with {s['overlap']} votes); "
        f"judgments: {s['judgments']} ({labels or 'none'})",
        f"Fleiss' kappa: {_f(s['fleiss_kappa'])} over {s['fleiss_items']} items with 2+ votes "
        "(labels: response 1, response 2, tie, both bad)",
    ]
    if s["cohen"]:
        lines.append("\nCohen's kappa by pair        items   kappa   raw agreement")
        for c in s["cohen"]:
            pair = f"{c['a']} / {c['b']}"
            lines.append(f"  {pair:<26}{c['shared_items']:>6}  {_f(c['kappa']):>6}   {c['agreement']:>8.1%}")
    lines.append("\nannotator        judged skipped  median s  share A [95% CI]      p(A=50%)  ties  both bad  "
                 "agree w/ others  agree w/ prior")
    for a in s["annotators"]:
        ci = f"[{a['share_a_ci'][0]:.2f}, {a['share_a_ci'][1]:.2f}]" if a["share_a_ci"] else ""
        share = f"{_f(a['share_a'], '.2f')} {ci}"
        lines.append(f"  {a['name']:<15}{a['judged']:>6}{a['skipped']:>8}  {_f(a['median_s'], '8.1f'):>8}  "
                     f"{share:<21} {_f(a['position_p'], '.3f'):>8}  {_f(a['tie_rate'], '.2f'):>4}  "
                     f"{_f(a['both_bad_rate'], '.2f'):>8}  {_f(a['agree_with_others'], '.2f'):>15}  "
                     f"{_f(a['agree_with_prior'], '.2f'):>14}")
    lines.append("\nshare A: how often the left response won an A/B decision (the order is random per item, so "
                 "50% is unbiased); p: exact binomial test against 50%.")
    return "\n".join(lines)
