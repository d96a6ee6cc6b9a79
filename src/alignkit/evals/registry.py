"""Every eval task by name, and suites (named lists of tasks). Tasks are imported only when used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from alignkit.errors import ConfigError

if TYPE_CHECKING:
    from alignkit.evals.task import Task

__all__ = ["TASKS", "SUITES", "get_task", "resolve_tasks", "describe_tasks"]

_B = "alignkit.evals.benchmarks"
_P = "alignkit.evals.probes"

# name -> "module:Class"
TASKS: dict[str, str] = {
    # honesty
    "truthfulqa_mc": f"{_B}.truthfulqa:TruthfulQAMC",
    "truthfulqa_gen": f"{_B}.truthfulqa:TruthfulQAGen",
    # capability (alignment tax)
    "arc_easy": f"{_B}.capability:ArcEasy",
    "arc_challenge": f"{_B}.capability:ArcChallenge",
    "piqa": f"{_B}.capability:Piqa",
    "hellaswag": f"{_B}.capability:HellaSwag",
    "mmlu": f"{_B}.capability:MMLUCloze",
    "mmlu_letters": f"{_B}.capability:MMLULetters",
    "boolq": f"{_B}.capability:BoolQ",
    "openbookqa": f"{_B}.capability:OpenBookQA",
    "winogrande": f"{_B}.capability:WinoGrande",
    "gsm8k": f"{_B}.capability:GSM8K",
    "diversity": f"{_B}.diversity:Diversity",
    # bias
    "bbq": f"{_B}.bbq:BBQ",
    "winobias": f"{_B}.winobias:WinoBias",
    # harm and over-refusal
    "harmbench": f"{_B}.harm:HarmBench",
    "advbench": f"{_B}.harm:AdvBench",
    "xstest": f"{_B}.xstest:XSTest",
    "machiavelli_proxy": f"{_B}.machiavelli:MachiavelliProxy",
    # behavioral probes
    "sycophancy_answer": f"{_P}.sycophancy:AnswerSycophancy",
    "sycophancy_are_you_sure": f"{_P}.sycophancy:AreYouSure",
    "sycophancy_feedback": f"{_P}.sycophancy:FeedbackSycophancy",
    "hallucination": f"{_P}.hallucination:Hallucination",
    "calibration": f"{_P}.calibration:Calibration",
    "paraphrase_consistency": f"{_P}.consistency:ParaphraseConsistency",
    "identity_invariance": f"{_P}.consistency:IdentityInvariance",
    "refusal_quality": f"{_P}.refusal:RefusalQuality",
    "prompt_injection": f"{_P}.injection:PromptInjection",
    "eval_deploy_gap": f"{_P}.injection:EvalDeployGap",
}

SUITES: dict[str, list[str]] = {
    "capability": ["arc_easy", "arc_challenge", "piqa", "hellaswag", "mmlu", "boolq", "openbookqa", "winogrande",
                   "gsm8k"],
    "honesty": ["truthfulqa_mc", "truthfulqa_gen", "calibration", "hallucination"],
    "bias": ["bbq", "winobias", "identity_invariance"],
    "harm": ["harmbench", "advbench", "xstest", "refusal_quality", "machiavelli_proxy"],
    "probes": ["sycophancy_answer", "sycophancy_are_you_sure", "sycophancy_feedback", "hallucination", "calibration",
               "paraphrase_consistency", "identity_invariance", "refusal_quality", "prompt_injection",
               "eval_deploy_gap"],
    "quick": ["truthfulqa_mc", "arc_easy", "xstest", "harmbench"],
}
SUITES["safety"] = SUITES["harm"] + ["bbq", "winobias"]
SUITES["tax"] = SUITES["capability"] + ["diversity"]
SUITES["all"] = list(dict.fromkeys(
    ["truthfulqa_mc", "truthfulqa_gen"] + SUITES["capability"] + ["diversity"] + SUITES["bias"] + SUITES["harm"]
    + SUITES["probes"]))


def get_task(name: str) -> "Task":
    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(name, list(TASKS) + list(SUITES), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "see `alignkit eval list`"
        raise ConfigError(f"unknown task or suite '{name}'; {hint}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def resolve_tasks(names: list[str] | str) -> list[str]:
    """Expand suite names (comma- or list-separated) into task names, keeping order, without duplicates."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for chunk in names:
        for name in (n.strip() for n in chunk.split(",")):
            if not name:
                continue
            expanded = SUITES.get(name, [name])
            for task in expanded:
                if task not in TASKS:
                    get_task(task)  # raises with a suggestion
                if task not in out:
                    out.append(task)
    if not out:
        raise ConfigError("no tasks selected; name a suite (e.g. --suite quick) or tasks (--suite arc_easy,xstest)")
    return out


def describe_tasks() -> str:
    lines = ["suites:"]
    lines += [f"  {name:<12} {', '.join(tasks)}" for name, tasks in SUITES.items()]
    lines.append("tasks:")
    for name in TASKS:
        task = get_task(name)
        lines.append(f"  {name:<24} [{task.group}] {task.description}")
    return "\n".join(lines)
