"""`alignkit judge audit`: never trust a judge blind.

On human-labeled pairs (chosen = the human's choice) the judge is run in both orders, and we report,
each with a 95% interval:
- agreement with the human labels (order-averaged, as the labels are produced), and for contrast the
  agreement of single-order judgments;
- position bias: the flip rate (the decision changes when the two responses swap places: the judge
  picked the same *position* both times) and the rate of choosing the first position;
- length bias: how often the judge prefers the longer response, against how often the humans did on the
  same pairs, and the correlation between the judge's preference and the relative length difference;
- self-preference: the judge writes its own reply to each prompt and is asked to compare it with the
  human-preferred reply; the rate at which it picks its own (a judge that is no better a writer than
  the human reference should not prefer itself most of the time).

Intervals: Wilson for proportions, Fisher z for the correlation, a seeded percentile bootstrap for means.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from alignkit.config import to_dict
from alignkit.feedback.io import atomic_write_json, progress_bar
from alignkit.feedback.judge import PairJudgment, PairwiseJudge
from alignkit.feedback.settings import AuditConfig
from alignkit.generate.base import SamplingParams

__all__ = ["wilson", "proportion", "pearson", "fisher_ci", "bootstrap_mean_ci", "position_metrics",
           "agreement_metrics", "length_metrics", "run_audit", "format_report", "Z95"]

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (good at small n and near 0 or 1); (nan, nan) if n == 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes: float, n: int) -> dict[str, Any]:
    lo, hi = wilson(successes, n)
    return {"value": successes / n if n else math.nan, "ci95": [lo, hi], "n": n}


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    if n < 3:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def fisher_ci(r: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% interval for a correlation via Fisher's z = atanh(r), standard error 1/sqrt(n-3)."""
    if math.isnan(r) or n <= 3:
        return math.nan, math.nan
    r = max(-0.999999, min(0.999999, r))
    centre, se = math.atanh(r), 1.0 / math.sqrt(n - 3)
    return math.tanh(centre - z * se), math.tanh(centre + z * se)


def bootstrap_mean_ci(values: Sequence[float], *, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of the mean."""
    vals = [v for v in values if not math.isnan(v)]
    if len(vals) < 2:
        return math.nan, math.nan
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(vals, k=len(vals))) / len(vals) for _ in range(samples))
    return means[int(0.025 * samples)], means[min(samples - 1, int(0.975 * samples))]


def _decision_credit(p: float) -> float:
    """1 for a preference toward response 1, 0 against, 0.5 for a tie or no signal."""
    return 0.5 if math.isnan(p) or p == 0.5 else float(p > 0.5)


def position_metrics(judgments: Sequence[PairJudgment]) -> dict[str, Any]:
    comps = [c for j in judgments for c in j.comparisons if c.p_ba is not None]
    decided = [c for c in comps if c.position_consistent is not None]
    flips = sum(not c.position_consistent for c in decided)
    singles = [p for c in comps for p in (c.p_ab, c.p_ba) if p is not None and not math.isnan(p) and p != 0.5]
    mean_a = [p for c in comps for p in (c.p_ab, c.p_ba) if p is not None and not math.isnan(p)]
    return {"flip_rate": proportion(flips, len(decided)),
            "first_position_rate": proportion(sum(p > 0.5 for p in singles), len(singles)),
            "mean_p_first_position": sum(mean_a) / len(mean_a) if mean_a else math.nan}


def agreement_metrics(judgments: Sequence[PairJudgment], *, both_orders: bool = True, seed: int = 0) -> dict[str, Any]:
    """Response 1 of every judgment is the human-preferred one."""
    def deployed(j: PairJudgment) -> float:
        ps = [c.p_first if both_orders else c.p_ab for c in j.comparisons]
        finite = [p for p in ps if not math.isnan(p)]
        return sum(finite) / len(finite) if finite else math.nan
    p_human = [deployed(j) for j in judgments]
    credit = sum(_decision_credit(p) for p in p_human)
    single = [p for j in judgments for c in j.comparisons
              for p in (c.p_ab, None if c.p_ba is None else 1.0 - c.p_ba) if p is not None]
    return {"agreement": proportion(credit, len(p_human)),
            "agreement_single_order": proportion(sum(_decision_credit(p) for p in single), len(single)),
            "mean_p_human_choice": {"value": _mean(p_human), "ci95": list(bootstrap_mean_ci(p_human, seed=seed)),
                                    "n": len(p_human)}}


def length_metrics(p_first: Sequence[float], len_first: Sequence[int], len_second: Sequence[int],
                   human_first: Sequence[bool]) -> dict[str, Any]:
    """Judge vs human preference for the longer response, and corr(judge preference, relative length gap)."""
    rows = [(p, a, b, h) for p, a, b, h in zip(p_first, len_first, len_second, human_first) if a != b]
    judge_longer = sum(_decision_credit(p) if a > b else 1.0 - _decision_credit(p) for p, a, b, _ in rows)
    human_longer = sum((a > b) == h for _, a, b, h in rows)
    xy = [((a - b) / (a + b), p - 0.5) for p, a, b, _ in zip(p_first, len_first, len_second, human_first)
          if not math.isnan(p) and a + b > 0]
    r = pearson([x for x, _ in xy], [y for _, y in xy])
    return {"judge_prefers_longer": proportion(judge_longer, len(rows)),
            "humans_prefer_longer": proportion(human_longer, len(rows)),
            "corr_preference_vs_length_gap": {"value": r, "ci95": list(fisher_ci(r, len(xy))), "n": len(xy)}}


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def run_audit(cfg: AuditConfig) -> dict[str, Any]:
    """Judge the labeled pairs in both orders (and the judge's own replies), then compute the report."""
    from alignkit.data.load import load_preferences
    from alignkit.feedback.label import build_judge, resolve_source

    pairs = load_preferences(resolve_source(cfg.data), limit=cfg.limit).records
    settings = replace(cfg.judge, both_orders=True, scoring="pairwise")  # the audit needs both orders
    judge = build_judge(settings, seed=cfg.seed)
    assert isinstance(judge, PairwiseJudge)
    prompts = [[m.to_dict() for m in p.prompt] for p in pairs]
    chosen = [" ".join(m.content for m in p.chosen) for p in pairs]
    rejected = [" ".join(m.content for m in p.rejected) for p in pairs]
    started = time.perf_counter()
    steps = 2 if cfg.self_preference else 1
    bar = progress_bar(len(pairs) * steps, "judge audit", cfg.progress, unit="pair")
    try:
        judgments: list[PairJudgment] = []
        for s in range(0, len(pairs), 16):  # chunks, so the bar moves on slow judges
            judgments += judge.judge(prompts[s : s + 16], chosen[s : s + 16], rejected[s : s + 16], progress=bar.update)
        own: list[str] = []
        self_j: list[PairJudgment] = []
        if cfg.self_preference:
            params = SamplingParams(max_tokens=cfg.self_max_new_tokens, temperature=0.0, seed=cfg.seed)
            for s in range(0, len(pairs), 16):
                mine = [g[0].text for g in judge.generator.generate(prompts[s : s + 16], params)]
                own += mine
                self_j += judge.judge(prompts[s : s + 16], mine, chosen[s : s + 16], progress=bar.update)
    finally:
        bar.close()
    report: dict[str, Any] = {
        "judge": judge.name, "data": cfg.data, "pairs": len(pairs),
        "principles_per_comparison": judge.k, "cot": settings.cot,
        **agreement_metrics(judgments, both_orders=cfg.judge.both_orders, seed=cfg.seed),
        "position": position_metrics(judgments),
        "length": length_metrics([j.p_first for j in judgments], [len(c) for c in chosen],
                                 [len(r) for r in rejected], [True] * len(pairs)),
    }
    if cfg.self_preference:
        wins = sum(_decision_credit(j.p_first) for j in self_j)
        report["self_preference"] = {"own_reply_preferred": proportion(wins, len(self_j)),
                                     "mean_own_length": _mean([float(len(t)) for t in own]),
                                     "mean_reference_length": _mean([float(len(t)) for t in chosen]),
                                     "examples": [{"prompt": p[-1]["content"], "own": o}
                                                  for p, o in zip(prompts[:3], own[:3])]}
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["config"] = to_dict(cfg)
    atomic_write_json(Path(cfg.output), report)
    return report


def _fmt(m: dict[str, Any]) -> tuple[str, str, str]:
    v, (lo, hi) = m["value"], m["ci95"]
    ci = "" if math.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"
    return ("n/a" if math.isnan(v) else f"{v:.3f}", ci, str(m["n"]))


def format_report(r: dict[str, Any]) -> str:
    """The report as a table (what `alignkit judge audit` prints)."""
    rows = [("agreement with human labels", r["agreement"]),
            ("  single order, no averaging", r["agreement_single_order"]),
            ("  mean P(human's choice)", r["mean_p_human_choice"]),
            ("position: flip rate on swap", r["position"]["flip_rate"]),
            ("position: picks first (A)", r["position"]["first_position_rate"]),
            ("length: judge prefers longer", r["length"]["judge_prefers_longer"]),
            ("length: humans prefer longer", r["length"]["humans_prefer_longer"]),
            ("length: corr(pref, len gap)", r["length"]["corr_preference_vs_length_gap"])]
    if "self_preference" in r:
        rows.append(("self-preference: own reply wins", r["self_preference"]["own_reply_preferred"]))
    head = (f"judge audit: {r['judge']} on {r['data']} ({r['pairs']} pairs, both orders, "
            f"{r['principles_per_comparison']} principle(s) per comparison{', CoT' if r['cot'] else ''})")
    lines = [head, f"{'metric':<34}{'value':>8}  {'95% CI':<16}{'n':>5}"]
    for name, m in rows:
        v, ci, n = _fmt(m)
        lines.append(f"{name:<34}{v:>8}  {ci:<16}{n:>5}")
    lines.append("reading: agreement 0.5 = chance; flip rate 0 = no position bias (1 = always the same slot); "
                 "judge-vs-human longer rates apart = length bias")
    return "\n".join(lines)
