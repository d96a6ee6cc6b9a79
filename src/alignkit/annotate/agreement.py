"""Agreement and bias statistics for human labels: pure functions over plain Python lists.

Cohen's kappa (two raters, Cohen 1960) and Fleiss' kappa (many raters, Fleiss 1971) measure agreement
beyond what chance would give; the position-bias test asks whether an annotator picks the response
shown on the left (A) more often than the per-item random order makes plausible.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

__all__ = ["cohen_kappa", "fleiss_kappa", "category_table", "binomial_two_sided_p", "wilson_interval"]


def cohen_kappa(rater1: Sequence[Hashable], rater2: Sequence[Hashable]) -> float:
    """kappa = (p_o - p_e) / (1 - p_e) over the items both raters labeled (aligned lists).

    p_o is the observed agreement; p_e = sum_k p1(k) * p2(k), the agreement expected if each rater
    labeled at random with their own category frequencies. NaN when p_e == 1 (both raters used one
    and the same category for every item): agreement beyond chance is then undefined.
    """
    if len(rater1) != len(rater2):
        raise ValueError(f"raters labeled different numbers of items: {len(rater1)} vs {len(rater2)}")
    n = len(rater1)
    if n == 0:
        return math.nan
    p_o = sum(a == b for a, b in zip(rater1, rater2)) / n
    c1, c2 = Counter(rater1), Counter(rater2)
    p_e = sum(c1[k] * c2[k] for k in c1) / (n * n)
    if p_e == 1.0:
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


def category_table(labels_per_item: Sequence[Sequence[Hashable]],
                   categories: Sequence[Hashable] | None = None) -> list[list[int]]:
    """Per-item label lists -> counts table (items x categories) for `fleiss_kappa`."""
    cats = list(categories) if categories is not None else sorted({x for item in labels_per_item for x in item},
                                                                  key=str)
    index = {c: j for j, c in enumerate(cats)}
    table = []
    for labels in labels_per_item:
        row = [0] * len(cats)
        for label in labels:
            if label not in index:
                raise ValueError(f"label {label!r} is not one of the categories {cats}")
            row[index[label]] += 1
        table.append(row)
    return table


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from an items x categories table of rating counts.

    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)) is the agreement among item i's n_i ratings;
    P_bar = mean_i P_i; p_j = sum_i n_ij / sum_i n_i; P_e = sum_j p_j^2; kappa = (P_bar - P_e) / (1 - P_e).
    With the same n for every item this is exactly Fleiss (1971). Items rated by a varying number of
    people are allowed (the usual generalization, each item weighted equally); items with fewer than
    two ratings carry no agreement information and are left out. NaN when nothing is left or P_e == 1.
    """
    rows = [list(r) for r in table if sum(r) >= 2]
    if not rows:
        return math.nan
    if any(x < 0 for r in rows for x in r):
        raise ValueError("rating counts must be >= 0")
    p_items = [(sum(x * x for x in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows]
    p_bar = sum(p_items) / len(p_items)
    total = sum(sum(r) for r in rows)
    p_cats = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    p_e = sum(p * p for p in p_cats)
    if p_e == 1.0:
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


def binomial_two_sided_p(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: the probability of an outcome no more likely than k of n.

    Computed in log space (lgamma) so thousands of judgments do not overflow.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0

    def logpmf(i: int) -> float:
        return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                + i * math.log(p) + (n - i) * math.log1p(-p))

    observed = logpmf(k)
    # relative tolerance: outcomes equally likely as k (the mirror image at p = 0.5) count as extreme
    total = sum(math.exp(lp) for lp in map(logpmf, range(n + 1)) if lp <= observed + 1e-9)
    return min(1.0, total)


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n (well behaved near 0, 1 and for small n)."""
    if n == 0:
        return (math.nan, math.nan)
    phat = k / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
