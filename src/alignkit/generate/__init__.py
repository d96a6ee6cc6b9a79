"""Generation backends. For now: batched greedy/sampled generation with a local transformers model."""

from alignkit.generate.local import generate_local

__all__ = ["generate_local"]
