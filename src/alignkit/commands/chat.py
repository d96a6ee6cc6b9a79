"""`alignkit chat MODEL PROMPT`: one quick generation."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

EPILOG = """\
examples:
  alignkit chat smollm2-135m-instruct "Write a haiku about rain."
  alignkit chat runs/quickstart/final "How do I pick a lock?" --max-new-tokens 80
  alignkit chat ./my-model "Hello" --system "You are terse." --temperature 0.7 --seed 1
"""


def _chat(args: argparse.Namespace) -> int:
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


def register(sub: Any) -> None:
    chat = sub.add_parser("chat", help="generate one reply from a model", description="Quick generation.",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    chat.add_argument("model", help="built-in name, hub id, directory (model or LoRA adapter) or .gguf file")
    chat.add_argument("prompt", help="the user message")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    chat.add_argument("--seed", type=int, default=0)
    chat.add_argument("--device", default="auto")
    chat.set_defaults(func=_chat)
