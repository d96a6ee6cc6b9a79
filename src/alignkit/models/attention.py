"""The attention function alignkit's trainers use on CPU: grouped-query attention without repeated heads, in fp32.

Transformers' `sdpa` path repeats the key/value heads to the query head count whenever an explicit mask is given
(our packed rows always carry one), so the attention backward computes and then sums 3x the key/value gradients on a
model like SmolLM2 (9 query heads, 3 key/value heads). PyTorch's CPU flash-attention kernel also runs slower in bf16
than in fp32 at the row lengths we train on (the bf16 path converts blocks back and forth). Measured on the project's
2-core AMX Xeon, one SmolLM2-135M DPO step (4 rows of ~200 tokens, bf16 autocast): 2.43 s with `sdpa`, 1.96 s with
this function. Decoding steps (one query token) and every non-CPU device go to transformers' own `sdpa` unchanged.

Packed rows: a caller that packs several examples into one row can pass their spans (`alignkit_segments=...` through
the model's forward); attention then runs per span. The row needs no padding, and the attention work is the sum of
the spans' squares rather than the row length squared.

Registered under the name `alignkit_sdpa` (attention and mask interfaces); `use_fast_cpu_attention` switches a loaded
model to it. The name lives only in the in-memory config: `save_pretrained` does not write it, so saved models load
with plain transformers.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ATTENTION_NAME", "SEGMENTS_KWARG", "SEGMENT_MASKS_KWARG", "cpu_attention", "use_fast_cpu_attention", "uses_fast_cpu_attention"]

ATTENTION_NAME = "alignkit_sdpa"
# keyword a caller passes through the model's forward: [start, end) spans tiling a single packed row with no
# attention across them (packed examples / preference pairs); attention then runs span by span, sum(span^2) work
# instead of row^2 under a block mask, and the row needs no padding.
SEGMENTS_KWARG = "alignkit_segments"
# optional companion: one (1, 1, t, t) mask per span (bool or additive float) used instead of slicing the row's mask
SEGMENT_MASKS_KWARG = "alignkit_segment_masks"
_registered = False


def cpu_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                  is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Same contract as transformers' `sdpa_attention_forward`: (B, H, T, D) inputs -> (B, T, H, D) output."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    unusual = any(kwargs.get(k) is not None for k in ("cache", "softcap", "position_bias")) or kwargs.get("output_attentions")
    if query.device.type != "cpu" or query.shape[2] == 1 or unusual:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out_dtype = value.dtype
    segments, segment_masks = kwargs.get(SEGMENTS_KWARG), kwargs.get(SEGMENT_MASKS_KWARG)
    with torch.autocast("cpu", enabled=False):
        dtypes = {query.dtype, key.dtype, value.dtype}
        if len(dtypes) > 1 or dtypes & {torch.bfloat16, torch.float16}:  # (under autocast q, k are fp32 after RoPE)
            query, key, value = query.float(), key.float(), value.float()
        causal = attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
        if attention_mask is not None and attention_mask.dtype not in (torch.bool, query.dtype):
            attention_mask = attention_mask.to(query.dtype)

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=bool(causal),
                enable_gqa=k.shape[1] != q.shape[1])

        if segments is None:
            out = attend(query, key, value, attention_mask).transpose(1, 2)
        else:  # one row: attention span by span
            _check_segments(segments, query)
            if segment_masks is not None:
                if len(segment_masks) != len(segments):
                    raise ValueError(f"{SEGMENT_MASKS_KWARG}: {len(segment_masks)} masks for {len(segments)} spans")
                masks = [m if m.dtype == torch.bool else m.to(query.dtype) for m in segment_masks]
            else:
                masks = [None if attention_mask is None else attention_mask[..., a:b, a:b] for a, b in segments]
            # split (backward: one cat) rather than slicing (backward: a zero-filled full-size gradient per slice);
            # each span's output is transposed to (1, t, H, D) so the cat is already the caller's layout
            sizes = [b - a for a, b in segments]
            parts = zip(query.split(sizes, 2), key.split(sizes, 2), value.split(sizes, 2), masks)
            out = torch.cat([attend(q, k, v, m).transpose(1, 2) for q, k, v, m in parts], dim=1)
    return out.contiguous().to(out_dtype), None


def _check_segments(segments: Any, query: torch.Tensor) -> None:
    """Spans must tile the single row exactly; anything else would silently drop or double tokens."""
    length = query.shape[2]
    ends = [0] + [b for _, b in segments]
    if query.shape[0] != 1 or any(a != ends[i] or b <= a for i, (a, b) in enumerate(segments)) or ends[-1] != length:
        raise ValueError(f"{SEGMENTS_KWARG} must tile one row of {length} tokens with [start, end) spans; "
                         f"got {len(segments)} spans for a batch of {query.shape[0]} rows: {list(segments)[:4]}...")


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, cpu_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    _registered = True


def uses_fast_cpu_attention(model: Any) -> bool:
    """Whether `model` (a transformers or PEFT model, or either under DDP) runs `alignkit_sdpa`."""
    model = getattr(model, "module", model)
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == ATTENTION_NAME


def use_fast_cpu_attention(model: Any) -> bool:
    """Switch a transformers model that uses `sdpa` to `alignkit_sdpa`; returns whether it switched."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    _register()
    model.set_attn_implementation(ATTENTION_NAME)
    return True
