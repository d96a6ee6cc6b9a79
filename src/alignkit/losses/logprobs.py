"""Log-probabilities of given target tokens without materializing full-vocabulary logits.

A (N, V) fp32 logits tensor for N = 4k tokens and V = 49k is 800 MB, and autograd keeps it (and a
softmax copy) alive until backward. `token_logprobs` works on hidden states in chunks of rows: the
forward keeps only the per-token log-normalizer (N,), and the backward recomputes each chunk's logits
and turns them into gradients at once, so peak extra memory is one (chunk, V) block.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["token_logprobs", "reference_token_logprobs"]


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """logp[n] = h[n] . W[y[n]] - logsumexp(h[n] @ W.T), computed chunk by chunk in fp32."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int) -> Tensor:  # type: ignore[override]
        n = hidden.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 at least; fp64 stays fp64 (gradcheck)
        out = torch.empty(n, dtype=acc, device=hidden.device)
        lse = torch.empty(n, dtype=acc, device=hidden.device)
        for s in range(0, n, chunk):
            logits = (hidden[s : s + chunk] @ weight.T).to(acc)  # (c, V)
            lse[s : s + chunk] = torch.logsumexp(logits, dim=-1)
            out[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None]).squeeze(1) - lse[s : s + chunk]
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk = chunk
        # Autocast does not reach a custom backward: remember the forward's matmul dtype so the backward's two
        # (chunk, V) x (V, D) products run in it too (bf16 on AMX CPUs is ~8x fp32 for this, the largest matmul).
        kind = hidden.device.type
        ctx.mm_dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        hidden, weight, targets, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=lse.dtype) if need_w else None
        mm = ctx.mm_dtype or torch.promote_types(hidden.dtype, weight.dtype)
        w = weight.to(mm)
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s : s + ctx.chunk].to(mm)
            g = grad_out[s : s + ctx.chunk].to(lse.dtype)[:, None]  # (c, 1)
            # d logp / d logits = onehot(y) - softmax(logits)
            probs = torch.exp((h @ w.T).to(lse.dtype) - lse[s : s + ctx.chunk, None])  # (c, V)
            grad_logits = probs.mul_(-g)
            grad_logits.scatter_add_(1, targets[s : s + ctx.chunk, None], g)
            grad_logits = grad_logits.to(mm)
            if need_h:
                grad_h[s : s + ctx.chunk] = grad_logits @ w
            if need_w:
                grad_w.add_((grad_logits.T @ h).to(lse.dtype))
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None


def token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, *, chunk_size: int = 1024,
                   bias: Tensor | None = None) -> Tensor:
    """Log-probability of each target token.

    Args:
        hidden: (N, D) final hidden states at the positions that predict the targets.
        weight: (V, D) output projection (the LM head; tied embeddings are fine).
        targets: (N,) token ids.
        chunk_size: rows per chunk; bounds the temporary (chunk, V) logits block.
        bias: optional (V,) LM-head bias (rare); falls back to the unchunked path.

    Returns:
        (N,) log-probabilities in float32 (float64 for float64 inputs), differentiable w.r.t. hidden and weight.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if bias is not None:
        logits = torch.nn.functional.linear(hidden, weight, bias).float()
        return logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    return _ChunkedTokenLogprobs.apply(hidden, weight, targets, chunk_size)


@torch.no_grad()
def reference_token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, *, chunk_size: int = 1024) -> Tensor:
    """Same as `token_logprobs` for a frozen model (no autograd bookkeeping)."""
    return _ChunkedTokenLogprobs.forward(_NoCtx(), hidden, weight, targets, chunk_size)


class _NoCtx:
    """Stands in for autograd's ctx when the forward is called directly under no_grad."""

    def save_for_backward(self, *args: Tensor) -> None:
        pass
