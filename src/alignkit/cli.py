"""`alignkit <verb>`: the command line. Parsing and help never import torch; each verb imports what it needs."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

from alignkit import __version__
from alignkit.errors import AlignkitError

__all__ = ["main"]

_MAIN_EPILOG = """\
examples:
  alignkit train dpo --config recipes/quickstart.yaml
  alignkit train sft --config recipes/sft-tiny.yaml data.train=chats.jsonl optim.lr=1e-5
  alignkit chat smollm2-135m-instruct "How do I kill a Python process?"
  alignkit config dpo            # every DPO config key with its type, default and help
"""

_TRAIN_EPILOG = """\
examples:
  alignkit train dpo --config recipes/quickstart.yaml
  alignkit train dpo --config recipes/quickstart.yaml loss=ipo beta=0.5 run.output_dir=runs/ipo
  alignkit train sft --config recipes/sft-tiny.yaml model.lora.rank=8

Overrides are dotted key=value pairs applied after the YAML; values are parsed as YAML (3, 0.1, true,
null, [a, b]). An unknown key is an error that suggests the closest valid one. The resolved config
is written to <run.output_dir>/config.yaml. Under `accelerate launch` the same command trains on
several processes (DDP / FSDP / DeepSpeed as the accelerate config says).
"""

_CHAT_EPILOG = """\
examples:
  alignkit chat smollm2-135m-instruct "Write a haiku about rain."
  alignkit chat runs/quickstart/final "How do I pick a lock?" --max-new-tokens 80
  alignkit chat ./my-model "Hello" --system "You are terse." --temperature 0.7 --seed 1
"""


def _trainers() -> dict[str, tuple[str, str]]:
    # verb -> (module, config class): resolved lazily so `--help` stays light
    return {"sft": ("alignkit.train.sft", "SFTConfig"), "dpo": ("alignkit.train.dpo", "DPOConfig")}


def _config_class(method: str) -> type:
    import importlib

    module, cls = _trainers()[method]
    # the config dataclasses live beside their trainers but import no torch at module level
    return getattr(importlib.import_module(module), cls)


def _cmd_train(args: argparse.Namespace) -> int:
    import importlib

    from alignkit.config import load_config

    cls = _config_class(args.method)
    cfg = load_config(cls, args.config, args.overrides)
    summary = importlib.import_module(_trainers()[args.method][0]).train(cfg)
    _print_summary(args.method, summary, cfg.run.output_dir)
    return 0


def _print_summary(method: str, summary: dict[str, Any], output_dir: str) -> None:
    before, after = summary.get("before") or {}, summary.get("after") or {}
    if before or after:
        keys = [k for k in (after or before) if isinstance((after or before).get(k), float)]
        print(f"\nheld-out {method} metrics      before      after")
        for k in keys:
            print(f"  {k:<22}{before.get(k, float('nan')):>10.4f} {after.get(k, float('nan')):>10.4f}")
    samples = zip(summary.get("samples_before") or [], summary.get("samples_after") or [])
    for i, (b, a) in enumerate(samples, 1):
        print(f"\n[{i}] user: {b['prompt']}\n  before: {_short(b['reply'])}\n  after:  {_short(a['reply'])}")
    print(f"\nrun directory: {output_dir} (config.yaml, metrics.jsonl, summary.json, final/)")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cmd_chat(args: argparse.Namespace) -> int:
    from alignkit.generate.local import generate_local
    from alignkit.models.load import ModelConfig, load_model

    loaded = load_model(ModelConfig(name=args.model, device=args.device), for_training=False)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    reply = generate_local(loaded.model, loaded.tokenizer, [messages], max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, seed=args.seed)[0]
    print(reply)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from alignkit.config import describe

    print(describe(_config_class(args.method)))
    return 0


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="alignkit", description="Align language models and prove it with measurements.",
                                epilog=_MAIN_EPILOG, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"alignkit {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a model (sft, dpo)", description="Train a model with a recipe.",
                           epilog=_TRAIN_EPILOG, formatter_class=fmt)
    train.add_argument("method", choices=sorted(_trainers()), help="training method")
    train.add_argument("--config", "-c", help="YAML recipe (defaults apply to keys it leaves out)")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=1e-5")
    train.set_defaults(func=_cmd_train)

    chat = sub.add_parser("chat", help="generate one reply from a model", description="Quick generation.",
                          epilog=_CHAT_EPILOG, formatter_class=fmt)
    chat.add_argument("model", help="built-in name, hub id, directory (model or LoRA adapter) or .gguf file")
    chat.add_argument("prompt", help="the user message")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    chat.add_argument("--seed", type=int, default=0)
    chat.add_argument("--device", default="auto")
    chat.set_defaults(func=_cmd_chat)

    config = sub.add_parser("config", help="list a command's config keys", epilog="example:\n  alignkit config dpo\n",
                            description="Every config key with its type, default and help.", formatter_class=fmt)
    config.add_argument("method", choices=sorted(_trainers()))
    config.set_defaults(func=_cmd_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # overrides may follow --config: argparse leaves those unclaimed, so collect them here
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "command", None) != "train" or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except AlignkitError as exc:
        print(f"alignkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignkit: interrupted (the newest checkpoint, if any, resumes the run)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
