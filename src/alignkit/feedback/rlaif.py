"""RLAIF: turn AI judgments into preference data the trainers read.

Two entry points, both working on one chunk at a time (the command journals chunks for resume):
- `label_pairs`: existing pairs (e.g. human data, or two models' replies) judged in both orders; the
  judge decides which reply is chosen, and its soft label is kept.
- `label_samples`: N sampled replies per prompt, scored pairwise (every pair, both orders -> win rates)
  or pointwise (probability-weighted 1-10), then turned into pairs: best vs worst, or all pairs.

Every record is the trainers' preference JSONL row ({"prompt": [...], "chosen": [...], "rejected":
[...]}) plus the evidence: `p_chosen` (soft label), `margin` (log-odds of p_chosen, the Bradley-Terry
reward difference, or the pointwise score difference), the principles used and the per-order probabilities.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

from alignkit.data.records import PreferencePair
from alignkit.feedback.judge import PairwiseJudge, PointwiseJudge, logit
from alignkit.generate.base import Chat

__all__ = ["build_pairs", "win_rates", "preference_record", "label_pairs", "label_samples", "LabelStats",
           "PairMode"]

PairMode = Literal["best_worst", "all"]


def build_pairs(scores: Sequence[float], mode: PairMode = "best_worst",
                min_margin: float = 0.0) -> list[tuple[int, int, float]]:
    """(chosen index, rejected index, margin) from per-response scores.

    best_worst: the top against the bottom response (one pair per prompt; ties go to the earlier index).
    all: every pair of responses, the higher-scored one chosen. Pairs whose margin is <= min_margin
    (ties, by default) are dropped; nan scores (no judge signal) never enter a pair.
    """
    valid = [i for i, s in enumerate(scores) if not math.isnan(s)]
    if len(valid) < 2:
        return []
    if mode == "best_worst":
        best = max(valid, key=lambda i: (scores[i], -i))
        worst = min(valid, key=lambda i: (scores[i], i))
        candidates = [(best, worst)]
    elif mode == "all":
        candidates = [(i, j) if scores[i] >= scores[j] else (j, i) for i, j in itertools.combinations(valid, 2)]
    else:
        raise ValueError(f"mode must be 'best_worst' or 'all', got {mode!r}")
    return [(c, r, scores[c] - scores[r]) for c, r in candidates if scores[c] - scores[r] > min_margin]


def win_rates(matrix: Sequence[Sequence[float]]) -> list[float]:
    """Mean P(i beats j) over the other responses j (matrix[i][j] = P(i better than j), nan ignored)."""
    out = []
    for i, row in enumerate(matrix):
        vals = [p for j, p in enumerate(row) if j != i and not math.isnan(p)]
        out.append(sum(vals) / len(vals) if vals else math.nan)
    return out


def preference_record(prompt: Chat, chosen: str, rejected: str, **evidence: Any) -> dict[str, Any]:
    """A row in the trainers' preference JSONL format, with extra evidence fields after it."""
    return {"prompt": [dict(m) for m in prompt], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], **evidence}


@dataclass
class LabelStats:
    judged: int = 0
    kept: int = 0
    undecided: int = 0  # no signal from the judge (nan)
    below_confidence: int = 0  # ties or p_chosen under the threshold
    flipped: int = 0  # label_pairs: the judge reversed the source's chosen/rejected
    position_consistent: list[bool] = field(default_factory=list)

    def merge(self, other: "LabelStats") -> None:
        for name in ("judged", "kept", "undecided", "below_confidence", "flipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.position_consistent.extend(other.position_consistent)

    def raw(self) -> dict[str, Any]:
        return asdict(self)

    def as_dict(self) -> dict[str, Any]:
        pc = self.position_consistent
        return {"judged": self.judged, "kept": self.kept, "undecided": self.undecided,
                "below_confidence": self.below_confidence, "flipped_vs_source": self.flipped,
                "position_consistency": sum(pc) / len(pc) if pc else None}


def _evidence(judgment: Any, swapped: bool) -> dict[str, Any]:
    """Per principle: P(the judge picks the record's chosen reply) when it is shown first (as A) and when
    it is shown second (as B). Their mean is the soft label; their gap is position bias."""
    first, second = [], []
    for c in judgment.comparisons:
        # c.p_ab: P("A") with response 1 as A; c.p_ba: P("A") with response 2 as A
        if not swapped:  # chosen = response 1
            first.append(c.p_ab)
            second.append(None if c.p_ba is None else 1.0 - c.p_ba)
        else:  # chosen = response 2
            first.append(c.p_ba)
            second.append(1.0 - c.p_ab)
    return {"principles": judgment.principles, "p_chosen_shown_first": _round(first),
            "p_chosen_shown_second": _round(second)}


def _round(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 6) for v in values]


def label_pairs(pairs: Sequence[PreferencePair], judge: PairwiseJudge,
                min_confidence: float = 0.5) -> list[tuple[dict[str, Any] | None, LabelStats]]:
    """Judge each pair: (record or None where dropped, that pair's stats), in input order."""
    prompts = [[m.to_dict() for m in p.prompt] for p in pairs]
    first = [" ".join(m.content for m in p.chosen) for p in pairs]
    second = [" ".join(m.content for m in p.rejected) for p in pairs]
    out: list[tuple[dict[str, Any] | None, LabelStats]] = []
    for pair, prompt, a, b, j in zip(pairs, prompts, first, second, judge.judge(prompts, first, second)):
        stats = LabelStats(judged=1, position_consistent=[c.position_consistent for c in j.comparisons
                                                           if c.position_consistent is not None])
        p = j.p_first
        swapped = p < 0.5
        p_chosen = 1.0 - p if swapped else p
        if math.isnan(p):
            stats.undecided = 1
            out.append((None, stats))
            continue
        if p_chosen <= 0.5 or p_chosen < min_confidence:
            stats.below_confidence = 1
            out.append((None, stats))
            continue
        stats.kept, stats.flipped = 1, int(swapped)
        chosen, rejected = (b, a) if swapped else (a, b)
        out.append((preference_record(prompt, chosen, rejected, p_chosen=round(p_chosen, 6),
                                      margin=round(logit(p_chosen), 6), judge=judge.name,
                                      agrees_with_source=not swapped, source=pair.source,
                                      **_evidence(j, swapped)), stats))
    return out


def _pairwise_matrices(prompts: Sequence[Chat], responses: Sequence[Sequence[str]],
                       judge: PairwiseJudge) -> list[tuple[list[list[float]], dict[tuple[int, int], Any]]]:
    """Every pair of every prompt's responses in one batched judge call: P matrices and judgments."""
    jobs = [(k, i, j) for k, rs in enumerate(responses) for i, j in itertools.combinations(range(len(rs)), 2)]
    judgments = judge.judge([prompts[k] for k, _, _ in jobs], [responses[k][i] for k, i, _ in jobs],
                            [responses[k][j] for k, _, j in jobs])
    out = [([[math.nan] * len(rs) for _ in rs], {}) for rs in responses]
    for (k, i, j), jd in zip(jobs, judgments):
        matrix, by_pair = out[k]
        matrix[i][j], matrix[j][i] = jd.p_first, 1.0 - jd.p_first
        by_pair[(i, j)] = jd
    return out


def _pointwise(prompts: Sequence[Chat], responses: Sequence[Sequence[str]], judge: PointwiseJudge,
               mode: PairMode, min_margin: float) -> list[tuple[list[dict[str, Any]], LabelStats]]:
    flat = [(p, r) for p, rs in zip(prompts, responses) for r in rs]
    scores = iter(judge.score([p for p, _ in flat], [r for _, r in flat]))
    name = getattr(judge.generator, "name", "judge")
    out = []
    for prompt, rs in zip(prompts, responses):
        values = [next(scores).score for _ in rs]
        pairs = build_pairs(values, mode, min_margin)
        stats = LabelStats(judged=len(rs), kept=len(pairs), undecided=sum(math.isnan(v) for v in values))
        out.append(([preference_record(prompt, rs[c], rs[r], margin=round(m, 6), score_chosen=round(values[c], 6),
                                       score_rejected=round(values[r], 6), scores=[round(v, 4) for v in values],
                                       judge=name) for c, r, m in pairs], stats))
    return out


def label_samples(prompts: Sequence[Chat], responses: Sequence[Sequence[str]],
                  judge: PairwiseJudge | PointwiseJudge, mode: PairMode = "best_worst", *, min_margin: float = 0.0,
                  min_confidence: float = 0.5) -> list[tuple[list[dict[str, Any]], LabelStats]]:
    """Preference records from N responses per prompt: (records, stats) per prompt, in order."""
    if isinstance(judge, PointwiseJudge):
        return _pointwise(prompts, responses, judge, mode, min_margin)
    out = []
    for prompt, rs, (matrix, by_pair) in zip(prompts, responses, _pairwise_matrices(prompts, responses, judge)):
        stats = LabelStats(judged=len(by_pair))
        for jd in by_pair.values():
            stats.position_consistent += [c.position_consistent for c in jd.comparisons
                                          if c.position_consistent is not None]
            stats.undecided += int(math.isnan(jd.p_first))
        rates = win_rates(matrix)
        records = []
        for c, r, _ in build_pairs(rates, mode, 0.0):
            p = matrix[c][r]
            if math.isnan(p) or p <= 0.5 or p < min_confidence:
                stats.below_confidence += 1
                continue
            jd = by_pair[(min(c, r), max(c, r))]
            records.append(preference_record(prompt, rs[c], rs[r], p_chosen=round(p, 6), margin=round(logit(p), 6),
                                             win_rate_chosen=round(rates[c], 6), win_rate_rejected=round(rates[r], 6),
                                             judge=judge.name, **_evidence(jd, swapped=c > r)))
        stats.kept = len(records)
        out.append((records, stats))
    return out
