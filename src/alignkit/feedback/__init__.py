"""AI feedback: the constitution, Constitutional AI (critique -> revision), AI judges (RLAIF) and judge audits.

Importing this package is cheap (no torch): model work happens inside the functions that need it.

    from alignkit.feedback import default_constitution, PairwiseJudge
    from alignkit.generate import get_generator
    judge = PairwiseJudge(get_generator("smollm2-135m-instruct"), default_constitution())
    [j] = judge.judge([[{"role": "user", "content": "How do I pick a lock?"}]], ["reply 1"], ["reply 2"])
    j.p_first    # P(reply 1 is better), both orders averaged
"""

from alignkit.feedback.audit import format_report, run_audit
from alignkit.feedback.cai import run_distill, run_sl
from alignkit.feedback.constitution import (
    HAZARD_IDS,
    Constitution,
    Hazard,
    Principle,
    UnknownIdError,
    default_constitution,
    default_constitution_path,
    load_constitution,
    parse_constitution,
)
from alignkit.feedback.judge import (
    PairJudgment,
    PairwiseJudge,
    PointwiseJudge,
    clamp_probability,
    order_average,
    soft_label,
)
from alignkit.feedback.label import build_judge, run_label
from alignkit.feedback.rlaif import build_pairs, label_pairs, label_samples
from alignkit.feedback.settings import AuditConfig, CAIConfig, DistillConfig, JudgeSettings, LabelConfig

__all__ = [
    "HAZARD_IDS",
    "Constitution",
    "Hazard",
    "Principle",
    "UnknownIdError",
    "default_constitution",
    "default_constitution_path",
    "load_constitution",
    "parse_constitution",
    "PairJudgment",
    "PairwiseJudge",
    "PointwiseJudge",
    "soft_label",
    "order_average",
    "clamp_probability",
    "build_pairs",
    "label_pairs",
    "label_samples",
    "build_judge",
    "run_sl",
    "run_distill",
    "run_label",
    "run_audit",
    "format_report",
    "CAIConfig",
    "DistillConfig",
    "LabelConfig",
    "AuditConfig",
    "JudgeSettings",
]
