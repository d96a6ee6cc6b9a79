"""`alignkit cai sl|distill|rl`: Constitutional AI data (critique -> revision, context distillation, AI labels)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "add_config_arguments", "load_command_config", "short"]

EPILOG = """\
examples:
  alignkit cai sl limit=50 rounds=2 output_dir=runs/cai            # SmolLM2 on 50 AdvBench prompts
  alignkit cai sl model=openai:http://localhost:8000/v1::my-model prompts=harmbench limit=null
  alignkit cai distill prompts=xstest limit=100 output_dir=runs/cai-distill
  alignkit cai rl policy=smollm2-135m-instruct prompts=advbench limit=50 judge.principles_per_comparison=3
  alignkit train dpo --config recipes/dpo-cai.yaml data.train=runs/cai/prefs.jsonl

The SL stage writes records.jsonl (every critique and revision, with the principle that drove it),
sft.jsonl (prompt + final revision, for `alignkit train sft`) and prefs.jsonl (final revision chosen over
the initial response, for `alignkit train dpo`). The constitution is resources/constitution.yaml unless
constitution=FILE. A killed run resumes from its journal; outputs are written only when it finishes.
"""

_STAGES = {
    "sl": ("CAIConfig", "supervised stage: response -> critique -> revision, k rounds with fresh principles"),
    "distill": ("DistillConfig",
                "context distillation: generate with the constitution as system prompt, save without it"),
    "rl": ("LabelConfig", "RL-stage labels: sample replies and let the judge pick, principles ensembled"),
}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML file with these keys (defaults apply to keys it leaves out)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. rounds=3 judge.cot=true")
    p.set_defaults(accepts_overrides=True)


def load_command_config(cls: type, args: argparse.Namespace) -> Any:
    from alignkit.config import load_config

    return load_config(cls, args.config, args.overrides)


def short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sl(args: argparse.Namespace) -> int:
    from alignkit.feedback.cai import run_sl
    from alignkit.feedback.settings import CAIConfig

    cfg = load_command_config(CAIConfig, args)
    s = run_sl(cfg)
    print(f"\ncai sl: {s['prompts']} prompts x {s['rounds']} rounds in {s['seconds']}s "
          f"({s['generated_this_run']} generated this run) with {s['constitution']}")
    print(f"  sft rows {s['sft_rows']}, preference pairs {s['preference_pairs']} "
          f"(unchanged after revision {s['unchanged_after_revision']}, empty revisions {s['empty_revisions']}, "
          f"revisions that repeat the critique {s['revisions_repeating_critique']})")
    print("  principles used: " + ", ".join(f"{k} {v}" for k, v in s["principles_used"].items()))
    _show_example(s["files"]["records"])
    print(f"\noutputs: {cfg.output_dir}/ (records.jsonl, sft.jsonl, prefs.jsonl, summary.json)")
    return 0


def _show_example(path: str) -> None:
    import json

    with open(path, encoding="utf-8") as f:
        first = f.readline()
    if not first:
        return
    rec = json.loads(first)
    print(f"\nexample: {short(rec['prompt'][-1]['content'], 120)}")
    print(f"  initial:   {short(rec['initial'])}")
    for r in rec["rounds"]:
        print(f"  [{r['round']}] principle {r['principle']}\n      critique: {short(r['critique'])}"
              f"\n      revision: {short(r['revision'])}")


def _distill(args: argparse.Namespace) -> int:
    from alignkit.feedback.cai import run_distill
    from alignkit.feedback.settings import DistillConfig

    cfg = load_command_config(DistillConfig, args)
    s = run_distill(cfg)
    pairs = f", preference pairs {s['preference_pairs']}" if "preference_pairs" in s else ""
    print(f"\ncai distill: {s['prompts']} prompts in {s['seconds']}s, system prompt {s['system_prompt_chars']} chars; "
          f"sft rows {s['sft_rows']}{pairs}\noutputs: {cfg.output_dir}/")
    return 0


def _rl(args: argparse.Namespace) -> int:
    from alignkit.commands.label import print_label_summary
    from alignkit.feedback.label import run_label
    from alignkit.feedback.settings import LabelConfig

    cfg = load_command_config(LabelConfig, args)
    print_label_summary(run_label(cfg, stage="cai rl"), title="cai rl")
    return 0


def _describe(cls_name: str) -> str:
    from alignkit.config import describe
    from alignkit.feedback import settings

    return describe(getattr(settings, cls_name))


def register(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    cai = sub.add_parser("cai", help="Constitutional AI data: critique/revision, context distillation, AI labels",
                         description="Constitutional AI (Bai et al. 2022) data generation.", epilog=EPILOG,
                         formatter_class=fmt)
    stages = cai.add_subparsers(dest="stage", metavar="STAGE", required=True)
    handlers = {"sl": _sl, "distill": _distill, "rl": _rl}
    examples = {
        "sl": "  alignkit cai sl limit=50 rounds=2\n  alignkit cai sl --config recipes/cai-sl.yaml critic=openai:http://localhost:8000/v1::judge\n",
        "distill": "  alignkit cai distill prompts=xstest limit=100 include_hazards=false\n",
        "rl": "  alignkit cai rl policy=smollm2-135m-instruct prompts=advbench limit=20 "
              "output=runs/cai-rl/prefs.jsonl\n",
    }
    for name, (cls_name, help_text) in _STAGES.items():
        p = stages.add_parser(name, help=help_text, description=help_text, formatter_class=fmt,
                              epilog=f"examples:\n{examples[name]}\nkeys:\n{_describe(cls_name)}\n")
        add_config_arguments(p)
        p.set_defaults(func=handlers[name])
