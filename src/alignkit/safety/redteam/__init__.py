"""Automated red teaming: attack families, a PAIR-style search, judged ASR with CIs, and the loop back
into training.

    from alignkit.safety.redteam import RedteamConfig, run_redteam
    outcome = run_redteam(RedteamConfig(target="smollm2-135m-instruct", limit=8))
    outcome.metrics["redteam"]["asr"]        # Metric(value, n, lo, hi): ASR over every attack, Wilson 95% CI

Families (`alignkit redteam list`): direct, jailbreak, obfuscation, many_shot, injection, crescendo, pair.
Every transcript goes to the results store (`alignkit.store`); `export_attacks` writes the successful
ones as prompts for `alignkit cai` with a held-out split by behavior, and `compare_runs` measures the
ASR change on held-out behaviors after alignment. Importing this package is cheap (no torch).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Behavior", "AttackCase", "Outcome", "StaticAttack", "InteractiveAttack", "AttackContext",
           "RedteamConfig", "run_redteam", "RedteamOutcome", "format_table", "Scorer", "audit_judge",
           "corrected_asr", "load_behaviors", "select_behaviors", "split_behaviors", "TRANSFORMS", "get_transform",
           "DirectRequest", "TemplateAttack", "ObfuscationAttack", "ManyShotAttack", "InjectionAttack",
           "CrescendoAttack", "PairAttack", "GuardedGenerator", "CachedGenerator", "export_attacks", "compare_runs",
           "run_guard_eval", "build_redteam_report", "load_attack_text"]

_WHERE = {
    "Behavior": "base", "AttackCase": "base", "Outcome": "base", "StaticAttack": "base", "InteractiveAttack": "base",
    "AttackContext": "base", "RedteamConfig": "config", "run_redteam": "runner", "RedteamOutcome": "runner",
    "format_table": "runner", "Scorer": "scoring", "audit_judge": "scoring", "corrected_asr": "scoring",
    "load_behaviors": "behaviors", "select_behaviors": "behaviors", "split_behaviors": "behaviors",
    "TRANSFORMS": "transforms", "get_transform": "transforms", "DirectRequest": "attacks", "TemplateAttack": "attacks",
    "ObfuscationAttack": "attacks", "ManyShotAttack": "attacks", "InjectionAttack": "attacks",
    "load_attack_text": "attacks", "CrescendoAttack": "crescendo", "PairAttack": "pair",
    "GuardedGenerator": "targets", "CachedGenerator": "targets", "export_attacks": "export",
    "compare_runs": "export", "run_guard_eval": "guardeval", "build_redteam_report": "report",
}


def __getattr__(name: str) -> Any:  # lazy: `import alignkit.safety.redteam` stays light
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"alignkit.safety.redteam.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'alignkit.safety.redteam' has no attribute {name!r}")
