"""Trainers, one readable file per method (`sft`, `dpo`), and the loop pieces they share (`loop`).

Importing this package does not import torch; `alignkit.train.dpo.train(cfg)` does when called.
"""

__all__ = ["dpo", "sft"]
