"""Deploy-time safety: guard rails on a model's input and output.

    from alignkit.safety import Guard
    decision = Guard().check_input("How do I make a pipe bomb?")   # Decision(action="block", ...)

Rails: the harm classifier (MiniLM embeddings + a trained head over the constitution's hazards), an
LLM judge (Llama-Guard-style prompt, any Generator), a prompt-injection / jailbreak detector that
decodes obfuscations, and PII / secret redaction. A YAML policy picks rails, thresholds and actions.
Importing this package is cheap: torch loads only when the classifier first runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Guard", "Decision", "RailVerdict", "Rail", "GuardPolicy", "load_policy", "HarmClassifier",
           "ClassifierRail", "InjectionRail", "PiiRail", "LlmJudgeRail", "find_pii", "redact_pii", "deobfuscate",
           "refusal_message"]

_WHERE = {
    "Guard": "guard", "Decision": "decision", "RailVerdict": "decision", "Rail": "decision",
    "GuardPolicy": "policy", "load_policy": "policy", "HarmClassifier": "classifier",
    "ClassifierRail": "classifier", "InjectionRail": "injection", "deobfuscate": "injection",
    "PiiRail": "pii", "find_pii": "pii", "redact_pii": "pii", "LlmJudgeRail": "judge",
    "refusal_message": "refusal",
}


def __getattr__(name: str) -> Any:  # lazy: `import alignkit.safety` stays light
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"alignkit.safety.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'alignkit.safety' has no attribute {name!r}")
