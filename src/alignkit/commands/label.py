"""`alignkit label`: AI preference labels (RLAIF) for existing pairs or for N sampled replies per prompt."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "print_label_summary"]

EPILOG = """\
examples:
  alignkit label pairs=runs/cai/prefs.jsonl output=runs/label/cai-judged.jsonl
  alignkit label pairs=prefs.jsonl judge.model=openai:http://localhost:8000/v1::Qwen/Qwen2.5-7B-Instruct judge.cot=true
  alignkit label prompts=advbench limit=20 policy=smollm2-135m-instruct samples_per_prompt=4 pair_mode=all
  alignkit label prompts=prompts.jsonl policy=./my-model judge.scoring=pointwise min_margin=1.0

Every pair is judged in both orders (judge.both_orders) and the two probabilities are averaged; the soft
label p_chosen comes from the judge's log-probs of "A"/"B" (no text parsing), and margin = log-odds
of p_chosen. Principles are drawn from the constitution per comparison (judge.principles_per_comparison
of them are averaged); judge.question=... uses one rubric instead. With judge.cot=true the judge
reasons first and its probabilities are clamped to judge.cot_clamp. Output is the trainers' preference
JSONL: `alignkit train dpo data.train=OUTPUT`. Check the judge first: `alignkit judge audit`.
"""


def print_label_summary(s: dict[str, Any], title: str = "label") -> None:
    consistency = s.get("position_consistency")
    pairs_mode = s["config"].get("pairs") is not None
    print(f"\n{title}: {s['items']} {'pairs' if pairs_mode else 'prompts'} ({s['labeled_this_run']} judged this run) "
          f"in {s['seconds']}s -> {s['records']} preference records")
    reversed_ = f", judge reversed the source's order {s['flipped_vs_source']}" if pairs_mode else ""
    print(f"  kept {s['kept']}, undecided {s['undecided']}, below confidence/ties {s['below_confidence']}{reversed_}")
    if consistency is not None:
        print(f"  position consistency (same answer in both orders) {consistency:.3f}; mean p_chosen {s['mean_p_chosen']}")
    print(f"output: {s['output']}")


def _label(args: argparse.Namespace) -> int:
    from alignkit.commands.cai import load_command_config
    from alignkit.feedback.label import run_label
    from alignkit.feedback.settings import LabelConfig

    print_label_summary(run_label(load_command_config(LabelConfig, args)))
    return 0


def register(sub: Any) -> None:
    from alignkit.commands.cai import add_config_arguments
    from alignkit.config import describe
    from alignkit.feedback.settings import LabelConfig

    p = sub.add_parser("label", help="AI preference labels (RLAIF) with soft labels, both orders",
                       description="Label preference pairs with an AI judge.",
                       epilog=f"{EPILOG}\nkeys:\n{describe(LabelConfig)}\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.set_defaults(func=_label)
