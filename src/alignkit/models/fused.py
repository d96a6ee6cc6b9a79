"""Fewer, larger ops for alignkit's log-prob forwards on CPU: RMSNorm, q/k/v projections and rotary embedding.

On a 2-core CPU a SmolLM2-135M training step spends about as long in small elementwise ops, dtype casts and per-op
dispatch as in its matmuls. Three patterns of the Llama family are worth fusing without a compiler:
- RMSNorm: transformers builds it from pow, mean, add, rsqrt and two multiplies, each a pass over the activations with
  its own autograd node. `rms_norm` is one forward (a norm reduction and two multiplies) and one hand-written backward.
- q/k/v projections: three matmuls over the same input (576 -> 576, 192, 192 for SmolLM2), with the input cast to bf16
  three times under autocast and three input gradients summed. One matmul against the concatenated weight does it once;
  the narrow 192-column matmuls are the least efficient ones on AMX.
- rotary position embedding: transformers' x * cos + rotate_half(x) * sin is five ops (two slices, a negation, a cat,
  two multiplies, an add) and a backward through each; `rotary` writes both output halves with two multiplies and two
  fused multiply-adds, and its backward is the same four ops.
Measured on the project's CPU, in-process A/B on the same DPO batches (bf16 autocast): step 1.456 -> 1.381 s with the
norm, 1.490 -> 1.436 s with the projections, 1.272 -> 1.234 s with the rotary embedding.

`install(model)` patches the eligible modules of a loaded model once (and, for the listed architectures, the modeling
module's `apply_rotary_pos_emb`); everything patched behaves exactly as before except inside `active()`, which
`TokenLogprobs` (training, reference and held-out log-prob passes) enters around its forward. Generation and evaluation
therefore run transformers' own code. Fusion applies to CPU tensors (RMSNorm to fp32 activations, the residual stream
under autocast; rotary to fp32 cos/sin); other devices and dtypes take the original path. Results agree with
transformers' to float rounding (tests: outputs and gradients against the unpatched modules).
"""

from __future__ import annotations

import threading
import types
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["rms_norm", "rotary", "install", "installed", "active"]

# RMSNorm classes whose forward is weight * (x * rsqrt(mean(x^2) + variance_epsilon)) computed in fp32 (Gemma's
# 1 + weight and OLMo's layer-norm variants are not)
_RMSNORM_CLASSES = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "Phi3RMSNorm", "SmolLM3RMSNorm"}
_state = threading.local()
_MARK = "_alignkit_fused"


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        rstd = torch.linalg.vector_norm(x, 2, -1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)
        return (x * rstd).mul_(weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        xhat = x * rstd
        grad_w = (grad * xhat).sum(dim=tuple(range(grad.ndim - 1))) if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d/dx [w * x * r] with r = (mean(x^2) + eps)^-1/2:  r * (g*w - xhat * mean(g*w * xhat))
            gw = grad * weight
            grad_x = gw.sub_(xhat.mul_((gw * xhat).mean(-1, keepdim=True))).mul_(rstd)
        return grad_x, grad_w, None


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """weight * x / sqrt(mean(x^2, last dim) + eps), differentiable in x and weight (same dtype in and out)."""
    return _RMSNorm.apply(x, weight, eps)


class _Rotary(torch.autograd.Function):
    """x * cos + rotate_half(x) * sin written straight into the output halves (4 ops, no cat, no negated copy)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:  # type: ignore[override]
        h = x.shape[-1] // 2
        x1, x2, c1, c2, s1, s2 = x[..., :h], x[..., h:], cos[..., :h], cos[..., h:], sin[..., :h], sin[..., h:]
        out = torch.empty(torch.broadcast_shapes(x.shape, cos.shape), dtype=torch.promote_types(x.dtype, cos.dtype),
                          device=x.device)
        torch.mul(x1, c1, out=out[..., :h]).addcmul_(x2, s1, value=-1)
        torch.mul(x2, c2, out=out[..., h:]).addcmul_(x1, s2)
        ctx.save_for_backward(cos, sin)
        ctx.dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        h = grad.shape[-1] // 2
        g1, g2, c1, c2, s1, s2 = grad[..., :h], grad[..., h:], cos[..., :h], cos[..., h:], sin[..., :h], sin[..., h:]
        out = torch.empty_like(grad)
        torch.mul(g1, c1, out=out[..., :h]).addcmul_(g2, s2)
        torch.mul(g2, c2, out=out[..., h:]).addcmul_(g1, s1, value=-1)
        return out.to(ctx.dtype), None, None  # summed in fp32, rounded once (transformers rounds each term)


def rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary position embedding in transformers' half-split layout: x * cos + rotate_half(x) * sin."""
    return _Rotary.apply(x, cos, sin)


def _is_active() -> bool:
    return getattr(_state, "depth", 0) > 0


@contextmanager
def active() -> Iterator[None]:
    """Inside this block (this thread), installed modules take their fused path."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def _norm_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    if (_is_active() and hidden_states.device.type == "cpu" and hidden_states.dtype == torch.float32
            and self.weight.dtype == torch.float32):
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)
    return type(self).forward(self, hidden_states)


class _FusedProjections:
    """Computes q, k and v in one matmul when q_proj is called, and hands k_proj / v_proj their parts.

    Attention modules call the three projections one after the other on the same tensor; anything else (another
    input, another order) falls back to the projection's own matmul, so a mismatch costs speed, never correctness.
    """

    def __init__(self, projections: tuple[nn.Linear, ...]) -> None:
        self.projections = projections
        self.sizes = [p.out_features for p in projections]
        self.input: Tensor | None = None
        self.parts: list[Tensor | None] = []

    def forward(self, index: int, x: Tensor) -> Tensor:
        proj = self.projections[index]
        if not (_is_active() and x.device.type == "cpu"):
            return F.linear(x, proj.weight, proj.bias)
        if index == 0:
            weight = torch.cat([p.weight for p in self.projections])
            bias = None if proj.bias is None else torch.cat([p.bias for p in self.projections])
            self.input, self.parts = x, list(F.linear(x, weight, bias).split(self.sizes, -1))
        elif x is not self.input or self.parts[index] is None:
            self.input, self.parts = None, []
            return F.linear(x, proj.weight, proj.bias)
        out, self.parts[index] = self.parts[index], None
        if all(p is None for p in self.parts):
            self.input, self.parts = None, []
        return out  # type: ignore[return-value]


# modeling modules whose apply_rotary_pos_emb is the standard half-split one over the whole head dimension
_ROTARY_MODULES = frozenset(f"transformers.models.{m}.modeling_{m}" for m in ("llama", "mistral", "qwen2", "qwen3"))
_rotary_originals: dict[str, Any] = {}


def _patch_rotary(module_name: str) -> None:
    """Route `apply_rotary_pos_emb` of one transformers modeling module through `rotary` while active (idempotent)."""
    import sys

    modeling = sys.modules.get(module_name)
    original = getattr(modeling, "apply_rotary_pos_emb", None)
    if modeling is None or original is None or module_name in _rotary_originals:
        return

    def apply_rotary_pos_emb(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, unsqueeze_dim: int = 1) -> Any:
        if (_is_active() and q.device.type == "cpu" and cos.dtype == torch.float32 and q.shape[-1] == cos.shape[-1]
                and q.shape[-1] % 2 == 0):
            cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
            return rotary(q, cos, sin), rotary(k, cos, sin)
        return original(q, k, cos, sin, unsqueeze_dim)

    _rotary_originals[module_name] = original
    modeling.apply_rotary_pos_emb = apply_rotary_pos_emb


def _projection_forward(self: nn.Linear, x: Tensor) -> Tensor:
    fused, index = self._alignkit_qkv
    return fused.forward(index, x)


def _projections(module: nn.Module) -> tuple[nn.Linear, ...] | None:
    parts = tuple(getattr(module, name, None) for name in ("q_proj", "k_proj", "v_proj"))
    if not all(type(p) is nn.Linear for p in parts):  # LoRA-wrapped or absent: leave alone
        return None
    first = parts[0]
    if any(p.in_features != first.in_features or (p.bias is None) != (first.bias is None)
           or p.weight.dtype != first.weight.dtype for p in parts):
        return None
    return parts  # type: ignore[return-value]


def install(model: nn.Module) -> int:
    """Patch `model`'s eligible RMSNorm and attention modules (once); returns how many were patched."""
    count = 0
    for module in model.modules():
        if getattr(module, _MARK, False):
            continue
        if hasattr(module, "q_proj") and type(module).__module__ in _ROTARY_MODULES:
            _patch_rotary(type(module).__module__)  # an attention module of a listed architecture, LoRA-wrapped or not
        if type(module).__name__ in _RMSNORM_CLASSES and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_norm_forward, module)
        elif (parts := _projections(module)) is not None:
            fused = _FusedProjections(parts)
            for index, proj in enumerate(parts):
                # state on the module (not in a closure), so a deepcopy of the model (a frozen reference) gets its own
                proj._alignkit_qkv = (fused, index)
                proj.forward = types.MethodType(_projection_forward, proj)
                setattr(proj, _MARK, True)
        else:
            continue
        setattr(module, _MARK, True)
        count += 1
    return count


def installed(model: nn.Module) -> bool:
    return any(getattr(m, _MARK, False) for m in model.modules())
