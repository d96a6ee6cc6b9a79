"""Model loading (hub id, directory, GGUF, built-in names), LoRA, reference models, tiny test models.

Imports torch lazily: importing this package is cheap.
"""

from alignkit.models.load import (
    BUILTIN_MODELS,
    LoadedModel,
    LoraSettings,
    ModelConfig,
    decoder_and_head,
    frozen_reference,
    load_model,
    reference_model,
    resolve_source,
    unwrap,
)

__all__ = [
    "BUILTIN_MODELS", "LoadedModel", "LoraSettings", "ModelConfig", "decoder_and_head", "frozen_reference",
    "load_model", "reference_model", "resolve_source", "unwrap",
]
