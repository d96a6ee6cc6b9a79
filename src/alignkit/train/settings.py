"""Config sections shared by the trainers. Plain dataclasses: importing them does not import torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DataSettings", "OptimSettings", "RunSettings"]


@dataclass
class DataSettings:
    train: str = field(default="", metadata={"help": "training data: .jsonl/.json/.parquet/.csv file, dataset dir or hub id; 'builtin:quickstart' for the shipped set"})
    eval: str | None = field(default=None, metadata={"help": "held-out data in the same layouts (optional)"})
    split: str = field(default="train", metadata={"help": "split name for hub datasets"})
    max_tokens: int = field(default=512, metadata={"help": "longest sequence kept (prompt + reply)"})
    max_prompt_tokens: int = field(default=256, metadata={"help": "longest prompt kept (preference data)"})
    truncation: Literal["truncate", "drop", "error"] = field(
        default="truncate", metadata={"help": "over-long examples: keep the prompt's end and cut the reply, drop them, or stop"}
    )
    skip_invalid: bool = field(default=False, metadata={"help": "skip invalid records (reported) instead of stopping"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N training records"})

    def validate(self) -> None:
        if not self.train:
            raise ValueError("train is required (a data file, dataset dir, hub id or builtin:quickstart)")
        if self.max_tokens < 8 or self.max_prompt_tokens < 1:
            raise ValueError("max_tokens must be >= 8 and max_prompt_tokens >= 1")
        if self.max_prompt_tokens >= self.max_tokens:
            raise ValueError(f"max_prompt_tokens ({self.max_prompt_tokens}) must be < max_tokens ({self.max_tokens})")


@dataclass
class OptimSettings:
    lr: float = field(default=5e-6, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "AdamW betas"})
    eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear warmup"})
    schedule: Literal["cosine", "linear", "constant"] = field(default="cosine", metadata={"help": "decay after warmup"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "final lr as a share of the peak (cosine/linear)"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the global gradient norm (null = off)"})

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("max_grad_norm must be > 0 or null")


@dataclass
class RunSettings:
    output_dir: str = field(default="runs/latest", metadata={"help": "run directory: config, metrics, checkpoints, final model"})
    seed: int = field(default=0, metadata={"help": "seed for data order, init and dropout"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training data (fractions allowed)"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps (overrides epochs)"})
    log_every_steps: int = field(default=1, metadata={"help": "metrics to metrics.jsonl and the progress bar every N steps"})
    save_every_steps: int | None = field(default=None, metadata={"help": "checkpoint every N steps (null = only at the end)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept"})
    eval_every_steps: int | None = field(default=None, metadata={"help": "held-out eval every N steps (null = before and after only)"})
    precision: Literal["auto", "fp32", "bf16"] = field(default="auto", metadata={"help": "auto = bf16 autocast on a GPU or an AMX CPU, else fp32"})
    resume: Literal["auto", "never", "must"] = field(default="auto", metadata={"help": "resume from the newest checkpoint in output_dir"})
    report_to: list[Literal["jsonl", "tensorboard", "wandb"]] = field(
        default_factory=lambda: ["jsonl"], metadata={"help": "metric sinks; jsonl is always written"}
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    cpu_malloc_tuning: bool = field(default=True, metadata={"help": "on CPU under glibc, serve tensors under 256 MB from the heap instead of fresh mmaps (process-wide; faster, ~200 MB more resident memory)"})

    def validate(self) -> None:
        if self.epochs <= 0 and self.max_steps is None:
            raise ValueError("epochs must be > 0 (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        for name in ("log_every_steps", "save_every_steps", "eval_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null")
