"""Statistics for evals: confidence intervals, paired significance tests, calibration, diversity.

Every aggregate carries n and a 95% interval: Wilson for proportions (correct at small n and near 0 or
1, where the normal interval collapses), a seeded percentile bootstrap for everything else. Two runs are
compared per item: McNemar's exact test for paired 0/1 outcomes, a paired bootstrap otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alignkit.evals.records import Metric

__all__ = [
    "wilson", "bootstrap_ci", "mean_metric", "is_binary", "mcnemar", "paired_bootstrap", "Comparison",
    "compare_paired", "expected_calibration_error", "brier_score", "reliability_bins", "distinct_n",
    "pairwise_agreement", "Z95",
]

Z95 = 1.959963984540054  # two-sided 95% normal quantile
BOOTSTRAP_SAMPLES = 1000


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (nan, nan) when n == 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1) for v in values)


def bootstrap_ci(n: int, stat: Callable[[np.ndarray], float], *, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of `stat(indices)` over `samples` resamples of range(n) with replacement."""
    if n <= 1:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [stat(rng.integers(0, n, n)) for _ in range(samples)]
    draws = [d for d in draws if not math.isnan(d)]
    if not draws:
        return math.nan, math.nan
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def _bootstrap_mean(values: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(axis=1)  # (samples,)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def mean_metric(values: Sequence[float], *, key: str = "", higher_is_better: bool | None = True,
                seed: int = 0, where: dict[str, object] | None = None) -> Metric:
    """Mean with a 95% CI: Wilson when every value is 0/1, bootstrap otherwise. NaN values are dropped."""
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(clean)
    if n == 0:
        return Metric(math.nan, 0, key=key, higher_is_better=higher_is_better, where=dict(where or {}))
    value = sum(clean) / n
    if is_binary(clean):
        lo, hi = wilson(sum(clean), n)
        method = "wilson"
    elif n > 1:
        lo, hi = _bootstrap_mean(np.asarray(clean), BOOTSTRAP_SAMPLES, seed)
        method = "bootstrap"
    else:
        lo, hi, method = math.nan, math.nan, ""
    return Metric(value, n, lo, hi, method, higher_is_better, key, dict(where or {}))


def mcnemar(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided McNemar p-value for paired 0/1 outcomes (binomial test on the discordant pairs)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x == 1 and y == 0)
    only_b = sum(1 for x, y in zip(a, b) if x == 0 and y == 1)
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(only_a, only_b) + 1)) / 2**discordant
    return min(1.0, 2 * tail)


def paired_bootstrap(n: int, delta: Callable[[np.ndarray], float], *, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0) -> tuple[float, float, float]:
    """(lo, hi, p) for a paired difference: resample items, recompute `delta(indices)`.

    p is the two-sided bootstrap p-value: twice the share of resampled deltas on the far side of zero.
    """
    if n <= 1:
        return math.nan, math.nan, 1.0
    rng = np.random.default_rng(seed)
    draws = np.array([delta(rng.integers(0, n, n)) for _ in range(samples)], dtype=float)
    draws = draws[~np.isnan(draws)]
    if len(draws) == 0:
        return math.nan, math.nan, 1.0
    p = 2 * min(float((draws <= 0).mean()), float((draws >= 0).mean()))
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5)), min(1.0, p)


@dataclass
class Comparison:
    """Run B minus run A on the items both scored."""

    metric: str
    a: float
    b: float
    delta: float
    lo: float
    hi: float
    p: float
    n: int
    test: str  # "mcnemar" or "paired-bootstrap"
    higher_is_better: bool | None = True

    @property
    def significant(self) -> bool:
        return self.p < 0.05

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "significant": self.significant}


def compare_paired(metric: str, a: Sequence[float], b: Sequence[float], *, higher_is_better: bool | None = True,
                   seed: int = 0) -> Comparison:
    """Compare per-item values of two runs (aligned lists): McNemar if 0/1, else paired bootstrap of the mean."""
    pa, pb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(pa) | np.isnan(pb))
    pa, pb = pa[keep], pb[keep]
    n = len(pa)
    mean_a = float(pa.mean()) if n else math.nan
    mean_b = float(pb.mean()) if n else math.nan
    diff = pb - pa
    lo, hi, p_boot = paired_bootstrap(n, lambda idx: float(diff[idx].mean()), seed=seed)
    if n and is_binary(pa.tolist()) and is_binary(pb.tolist()):
        return Comparison(metric, mean_a, mean_b, mean_b - mean_a, lo, hi, mcnemar(pa, pb), n, "mcnemar",
                          higher_is_better)
    return Comparison(metric, mean_a, mean_b, mean_b - mean_a, lo, hi, p_boot, n, "paired-bootstrap",
                      higher_is_better)


def reliability_bins(confidence: Sequence[float], correct: Sequence[float], bins: int = 10) -> list[dict[str, float]]:
    """Equal-width confidence bins: [{"lo", "hi", "confidence", "accuracy", "count"}] (empty bins kept, count 0)."""
    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    acc = np.asarray(correct, dtype=float)
    index = np.minimum((conf * bins).astype(int), bins - 1)  # confidence 1.0 goes to the last bin
    out = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "count": count,
                    "confidence": float(conf[mask].mean()) if count else math.nan,
                    "accuracy": float(acc[mask].mean()) if count else math.nan})
    return out


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[float], bins: int = 10) -> float:
    """ECE = sum_b |B_b|/N * |acc_b - conf_b| over equal-width bins."""
    total = len(confidence)
    if total == 0:
        return math.nan
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
               for b in reliability_bins(confidence, correct, bins) if b["count"])


def brier_score(probabilities: Sequence[Sequence[float]], gold: Sequence[int]) -> float:
    """Multi-class Brier score: mean over items of sum_k (p_k - 1[k == gold])^2."""
    if not probabilities:
        return math.nan
    total = 0.0
    for probs, g in zip(probabilities, gold):
        total += sum((p - (1.0 if k == g else 0.0)) ** 2 for k, p in enumerate(probs))
    return total / len(probabilities)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams over whitespace tokens of all texts (0 when none)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def pairwise_agreement(answers: Sequence[object]) -> float:
    """C = 2/(k(k-1)) * sum_{i<j} 1[a_i == a_j]; 1.0 for fewer than two answers."""
    k = len(answers)
    if k < 2:
        return 1.0
    same = sum(1 for i in range(k) for j in range(i + 1, k) if answers[i] == answers[j])
    return 2 * same / (k * (k - 1))
