"""Reward-hacking monitors for PPO and GRPO (value misspecification made visible).

An RL policy optimizes the proxy reward it is given, not what the proxy stands for. These monitors log,
each step, the signals that show the two coming apart, plot them as PNG in the run directory, and can
stop the run when a held-out gold scorer falls while the proxy keeps rising:

- KL(pi || pi_ref) per response: how far the policy has moved (Gao et al. 2022 plot gold and proxy
  reward against sqrt(KL): the proxy keeps climbing while the gold score turns over);
- response length and its correlation with reward: length is the classic exploited feature
  (Singhal et al. 2023, "A Long Way to Go");
- the proxy against a held-out gold scorer (a second reward model or a judge) and their gap;
- ensemble disagreement: members diverge where the policy leaves the reward model's data
  (Coste et al. 2024; Eisenstein et al. 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from alignkit.rewards.spec import RewardSpec

__all__ = ["MonitorSettings", "RewardHackingMonitor", "pearson", "trend"]


@dataclass
class MonitorSettings:
    gold: RewardSpec | None = field(default=None, metadata={"help": "held-out gold scorer (a second reward model, a judge or a rule) scored on every step's rollouts"})
    early_stop: bool = field(default=False, metadata={"help": "stop when the gold score falls while the proxy rises (needs gold)"})
    window_steps: int = field(default=6, metadata={"help": "steps in the trend window of the early stop"})
    min_gold_drop: float = field(default=0.0, metadata={"help": "the gold trend over the window must fall by more than this"})
    plot: bool = field(default=True, metadata={"help": "write monitors.png to the run directory at each eval and at the end"})

    def validate(self) -> None:
        if self.early_stop and self.gold is None:
            raise ValueError("early_stop needs a gold scorer (monitor.gold)")
        if self.window_steps < 3:
            raise ValueError("window_steps must be >= 3")


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation, or None when either side is constant (undefined)."""
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return None if sxx <= 0 or syy <= 0 else sxy / math.sqrt(sxx * syy)


def trend(values: Sequence[float]) -> float:
    """Change over the window by least squares: slope x (len - 1). Robust to one noisy step."""
    n = len(values)
    mx = (n - 1) / 2
    my = sum(values) / n
    sxx = sum((i - mx) ** 2 for i in range(n))
    return sum((i - mx) * (v - my) for i, v in enumerate(values)) / sxx * (n - 1) if sxx else 0.0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


class RewardHackingMonitor:
    """Per-step signals, their history (saved in checkpoints), the early-stop rule and the plots."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.history: list[dict[str, float]] = []  # one row per training step
        self.evals: list[dict[str, float]] = []  # held-out evaluations (step, reward, gold, ...)

    def record(self, step: int, *, proxy: Sequence[float], lengths: Sequence[float], kl: Sequence[float] | None = None,
               gold: Sequence[float] | None = None, disagreement: Sequence[float] | None = None) -> dict[str, float]:
        """Signals for one step's rollouts (one value per response); returns them as metrics."""
        row: dict[str, float] = {"step": float(step), "reward": _mean(proxy), "length": _mean(lengths)}
        if kl is not None:
            row["kl"] = _mean(kl)
        corr = pearson(lengths, proxy)
        if corr is not None:
            row["length_reward_corr"] = corr
        if gold is not None:
            row["gold"] = _mean(gold)
            row["gap"] = row["reward"] - row["gold"]
        if disagreement is not None:
            row["disagreement"] = _mean(disagreement)
        self.history.append(row)
        return {f"monitor/{k}": v for k, v in row.items() if k != "step"}

    def record_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.evals.append({"step": float(step), **metrics})

    def should_stop(self) -> str | None:
        """A reason to stop when, over the last window, gold fell while the proxy rose; else None."""
        s = self.settings
        rows = [r for r in self.history if "gold" in r][-s.window_steps :]
        if not s.early_stop or len(rows) < s.window_steps:
            return None
        proxy_change = trend([r["reward"] for r in rows])
        gold_change = trend([r["gold"] for r in rows])
        if proxy_change > 0 and gold_change < -s.min_gold_drop:
            return (f"gold score fell by {-gold_change:.4f} while the proxy rose by {proxy_change:.4f} over the "
                    f"last {s.window_steps} steps (monitor.early_stop)")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "evals": list(self.evals)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.evals = list(state.get("history", [])), list(state.get("evals", []))

    def plot(self, path: Path, title: str = "") -> Path | None:
        """monitors.png: reward (proxy, gold, held-out) by step, KL, reward vs KL, length, gap, disagreement."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt

        from alignkit.train.loop import atomic_write_bytes

        fig, ax = plt.subplots(2, 3, figsize=(15, 8))
        self._panel_rewards(ax[0, 0])
        self._panel_series(ax[0, 1], "kl", "KL(pi || ref) per response")
        self._panel_reward_vs_kl(ax[0, 2])
        self._panel_length(ax[1, 0])
        self._panel_series(ax[1, 1], "gap", "proxy - gold gap")
        self._panel_series(ax[1, 2], "disagreement", "ensemble disagreement (std)")
        fig.suptitle(title or "reward-hacking monitors")
        fig.tight_layout()
        atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=80))
        plt.close(fig)
        return path

    def _series(self, key: str) -> tuple[list[float], list[float]]:
        rows = [r for r in self.history if key in r and not math.isnan(r[key])]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def _panel_rewards(self, ax: Any) -> None:
        ax.plot(*self._series("reward"), label="proxy (train rollouts)")
        if any("gold" in r for r in self.history):
            ax.plot(*self._series("gold"), label="gold (train rollouts)")
        for key, label in (("reward_mean", "proxy (held-out)"), ("gold_mean", "gold (held-out)")):
            pts = [(e["step"], e[key]) for e in self.evals if key in e]
            if pts:
                ax.plot(*zip(*pts), marker="o", linestyle="--", label=label)
        ax.set_title("reward")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)

    def _panel_series(self, ax: Any, key: str, title: str) -> None:
        steps, values = self._series(key)
        if steps:
            ax.plot(steps, values)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")

    def _panel_reward_vs_kl(self, ax: Any) -> None:
        rows = [r for r in self.history if "kl" in r and not math.isnan(r["kl"])]
        kl = [max(r["kl"], 0.0) ** 0.5 for r in rows]
        ax.plot(kl, [r["reward"] for r in rows], marker=".", label="proxy")
        if any("gold" in r for r in rows):
            ax.plot([k for k, r in zip(kl, rows) if "gold" in r], [r["gold"] for r in rows if "gold" in r],
                    marker=".", label="gold")
        ax.set_title("reward vs sqrt(KL)")
        ax.set_xlabel("sqrt(KL)")
        ax.legend(fontsize=8)

    def _panel_length(self, ax: Any) -> None:
        ax.plot(*self._series("length"), color="tab:blue")
        ax.set_ylabel("response tokens", color="tab:blue")
        ax.set_xlabel("step")
        twin = ax.twinx()
        twin.plot(*self._series("length_reward_corr"), color="tab:red")
        twin.set_ylim(-1.05, 1.05)
        twin.set_ylabel("corr(length, reward)", color="tab:red")
        ax.set_title("length and its correlation with reward")
