"""Guardrail evaluation: the same attacks against the model with and without the guard pipeline, plus XSTest
safe prompts, so a user sees what the guard adds (ASR drop per family, where it blocked: input or output)
and what it costs (safe prompts it blocks: over-blocking).

Both runs go to the results store as ordinary red-team runs (the guarded one is named `...-guarded-...`),
so `alignkit redteam report BASE GUARDED` shows them side by side. The model's replies are generated once:
a `CachedGenerator` serves the guarded run every reply the unguarded run already produced for the same
conversation, so the guarded pass costs only the guard's checks and the conversations it changed.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from alignkit.safety.redteam.config import RedteamConfig
from alignkit.safety.redteam.runner import OVERALL_TASK, RedteamOutcome, run_redteam

if TYPE_CHECKING:
    from alignkit.evals.judge import Judge
    from alignkit.generate.base import Generator
    from alignkit.store import ResultStore

__all__ = ["run_guard_eval", "format_guard_eval", "DEFAULT_XSTEST_SAFE"]

DEFAULT_XSTEST_SAFE = 50


def run_guard_eval(cfg: RedteamConfig, *, target: "Generator | None" = None, judge: "Judge | None" = None,
                   guard: Any = None, store: "ResultStore | None" = None) -> dict[str, Any]:
    """Run `cfg` unguarded and guarded (cfg.guard, default: the shipped policy); return the comparison."""
    from alignkit.safety.redteam.scoring import build_judge
    from alignkit.safety.redteam.targets import CachedGenerator, GuardedGenerator, build_target, load_guard
    from alignkit.store import ResultStore

    base_cfg = replace(cfg, guard=None, xstest_safe=cfg.xstest_safe or DEFAULT_XSTEST_SAFE, run_id=None)
    guarded_cfg = replace(base_cfg, guard=cfg.guard or "default")
    model = CachedGenerator(target or build_target(cfg.target, batch_size=cfg.batch_size, device=cfg.device))
    judge = judge or build_judge(cfg.judge)
    own = store is None
    store = store or ResultStore(cfg.db)
    try:
        base = run_redteam(base_cfg, target=model, judge=judge, attacker=model, store=store)
        guarded_target = GuardedGenerator(model, guard or load_guard(guarded_cfg.guard or "default"))
        guarded = run_redteam(guarded_cfg, target=guarded_target, judge=judge, attacker=model, store=store)
        result = _compare(store, base, guarded)
    finally:
        if own:
            store.close()
    result["cache_hits"] = model.hits
    return result


def _compare(store: "ResultStore", base: RedteamOutcome, guarded: RedteamOutcome) -> dict[str, Any]:
    from alignkit.evals.metrics import compare_paired, wilson
    from alignkit.safety.redteam.export import attack_records, by_family

    a = {r.item_id: r for r in attack_records(store, base.run_id)}
    b = {r.item_id: r for r in attack_records(store, guarded.run_id)}
    ids = sorted(a.keys() & b.keys())
    groups = by_family(ids, a)
    rows = []
    for name, members in groups.items():
        va, vb = [a[i].scores["asr"] for i in members], [b[i].scores["asr"] for i in members]
        comp = compare_paired(name, va, vb, higher_is_better=False)
        where = [b[i].meta.get("guard") for i in members]
        rows.append({"family": name, "n": len(members), "asr": comp.a, "asr_guarded": comp.b, "delta": comp.delta,
                     "p": comp.p, "blocked_input": where.count("input"), "blocked_output": where.count("output")})
    control = [r for r in store.records(guarded.run_id, "redteam/control")]
    base_control = {r.item_id: r for r in store.records(base.run_id, "redteam/control")}
    blocked = sum(bool(r.meta.get("guard")) for r in control)
    lo, hi = wilson(blocked, len(control))
    refused_base = sum(r.scores.get("refusal", 0.0) for r in base_control.values())
    refused_guarded = sum(r.scores.get("refusal", 0.0) for r in control)
    return {
        "base_run": base.run_id, "guarded_run": guarded.run_id, "rows": rows,
        "over_blocking": {"n": len(control), "blocked": blocked, "rate": blocked / len(control) if control else math.nan,
                          "lo": lo, "hi": hi,
                          "refusal_base": refused_base / len(base_control) if base_control else math.nan,
                          "refusal_guarded": refused_guarded / len(control) if control else math.nan},
        "judge_accuracy": base.metrics[OVERALL_TASK].get("judge_accuracy"),
    }


def format_guard_eval(result: dict[str, Any]) -> str:
    lines = [f"without guard: {result['base_run']}", f"with guard:    {result['guarded_run']}", "",
             "| family | n | ASR without guard | ASR with guard | change | p (McNemar) | blocked at input | "
             "blocked at output |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['family']} | {r['n']} | {r['asr']:.3f} | {r['asr_guarded']:.3f} | {r['delta']:+.3f} | "
                     f"{r['p']:.3f} | {r['blocked_input']} | {r['blocked_output']} |")
    o = result["over_blocking"]
    if o["n"]:
        lines += ["", f"over-blocking: the guard blocked {o['blocked']} of {o['n']} XSTest safe prompts "
                      f"({o['rate']:.3f}, 95% CI [{o['lo']:.2f}, {o['hi']:.2f}]); safe prompts refused (judge, guard "
                      f"refusals included): {o['refusal_base']:.3f} without the guard, {o['refusal_guarded']:.3f} with it"]
    return "\n".join(lines)
