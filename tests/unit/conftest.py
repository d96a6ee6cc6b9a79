"""Shared fixtures: small preference / conversation files and tiny-model configs (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOPICS = ["rain", "bread", "python", "stars", "tea", "rivers", "chess", "maps", "bees", "glass", "wind", "salt"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def pref_file(tmp_path: Path) -> Path:
    rows = []
    for i in range(24):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({
            "prompt": [{"role": "user", "content": f"Tell me one fact about {topic}, please ({i})."}],
            "chosen": [{"role": "assistant", "content": f"Sure: {topic} is a fine topic, and here is a fact {i}."}],
            "rejected": [{"role": "assistant", "content": "I can't help with that."}],
        })
    return _write_jsonl(tmp_path / "prefs.jsonl", rows)


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    rows = []
    for i in range(24):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({"messages": [
            {"role": "user", "content": f"Say something about {topic}."},
            {"role": "assistant", "content": f"{topic.capitalize()} is interesting, fact number {i}."},
        ]})
    return _write_jsonl(tmp_path / "chats.jsonl", rows)


def tiny_base(output_dir: Path, train: Path, **extra: object) -> dict:
    """Config dict for a few-step run of the tiny random Llama."""
    cfg = {
        "model": {"name": "tiny-random-llama"},
        "data": {"train": str(train), "max_tokens": 128, "max_prompt_tokens": 64},
        "optim": {"lr": 1e-2, "warmup_ratio": 0.0, "max_grad_norm": 1.0},
        # fp32: these runs compare weights bit-for-bit; precision=auto would pick bf16 on an AMX CPU
        "run": {"output_dir": str(output_dir), "max_steps": 3, "progress": False, "precision": "fp32"},
    }
    for key, value in extra.items():
        section, _, name = key.partition("__")
        if name:
            cfg.setdefault(section, {})[name] = value
        else:
            cfg[key] = value
    return cfg
