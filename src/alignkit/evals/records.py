"""What an eval produces: one `Record` per scored item and `Metric`s (value, n, 95% CI) per task.

Plain dataclasses with no heavy imports, so the results store and the report can use them without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Record", "Metric"]


@dataclass
class Record:
    """One scored item: what the model was asked, what it said, and the per-item scores."""

    task: str
    item_id: str
    prompt: str
    output: str
    score: float | None  # the task's primary per-item score (1/0 for accuracy-like tasks)
    scores: dict[str, float] = field(default_factory=dict)  # every per-item metric value
    tokens: int = 0  # tokens the model generated (or scored, for log-likelihood tasks)
    latency_s: float = 0.0  # model time spent on this item (batch time shared evenly)
    meta: dict[str, Any] = field(default_factory=dict)  # task-specific detail for aggregates and drill-down

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Metric:
    """An aggregate with its uncertainty. `lo`/`hi` bound a 95% interval (NaN when undefined)."""

    value: float
    n: int
    lo: float = math.nan
    hi: float = math.nan
    method: str = ""  # "wilson", "bootstrap", or "" (no interval)
    higher_is_better: bool | None = True  # None: neither direction is "better" (e.g. a bias score near 0)
    key: str = ""  # the per-item `scores` key this is the mean of ("" for derived metrics)
    where: dict[str, Any] = field(default_factory=dict)  # ...over records whose meta matches, e.g. {"label": "safe"}

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Metric":
        values = {k: (math.nan if v is None and k in ("value", "lo", "hi") else v) for k, v in data.items()}
        return cls(**values)

    def __str__(self) -> str:
        if math.isnan(self.lo):
            return f"{self.value:.3f} (n={self.n})"
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}] (n={self.n})"
