"""Save the trained model so plain `transformers` / `peft` `from_pretrained` can load it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["save_final"]


def save_final(model: Any, tokenizer: Any, target: Path) -> Path:
    """Write the model (full weights, or the LoRA adapter) and tokenizer to `target`, atomically.

    A LoRA run saves only the adapter; `peft.AutoPeftModelForCausalLM.from_pretrained(target)` (or
    `alignkit.models.load_model`) loads it on top of its base model.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
