"""`alignkit judge audit`: position, length and self-preference bias, and agreement with human labels."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

EPILOG = """\
examples:
  alignkit judge audit                                          # SmolLM2 judge on the shipped 48 labeled pairs
  alignkit judge audit judge.model=openai:http://localhost:8000/v1::Qwen/Qwen2.5-7B-Instruct
  alignkit judge audit data=human_prefs.jsonl judge.principles_per_comparison=3 judge.cot=true
  alignkit judge audit self_preference=false output=runs/audit.json

The data's chosen reply is the human's choice (builtin:feedback-audit: 48 pairs on harmlessness,
helpfulness and honesty, the preferred reply the longer one in 23). Use the same judge.* keys as
`alignkit label`, so the audit checks the judge that labels your data.
"""

AUDIT_EPILOG = """\
examples:
  alignkit judge audit
  alignkit judge audit data=annotations.jsonl limit=200 judge.model=vllm:Qwen/Qwen2.5-7B-Instruct
"""


def _audit(args: argparse.Namespace) -> int:
    from alignkit.commands.cai import load_command_config
    from alignkit.feedback.audit import format_report, run_audit
    from alignkit.feedback.settings import AuditConfig

    cfg = load_command_config(AuditConfig, args)
    report = run_audit(cfg)
    print("\n" + format_report(report))
    print(f"report: {cfg.output} ({report['seconds']}s)")
    return 0


def register(sub: Any) -> None:
    from alignkit.commands.cai import add_config_arguments
    from alignkit.config import describe
    from alignkit.feedback.settings import AuditConfig

    fmt = argparse.RawDescriptionHelpFormatter
    judge = sub.add_parser("judge", help="check an AI judge: position/length/self-preference bias, human agreement",
                           description="Judge tools.", epilog=EPILOG, formatter_class=fmt)
    tools = judge.add_subparsers(dest="judge_command", metavar="COMMAND", required=True)
    audit = tools.add_parser("audit", help="audit a judge on human-labeled pairs",
                             description="Audit an AI judge on human-labeled pairs (each figure with a 95% CI).",
                             epilog=f"{AUDIT_EPILOG}\nkeys:\n{describe(AuditConfig)}\n", formatter_class=fmt)
    add_config_arguments(audit)
    audit.set_defaults(func=_audit)
