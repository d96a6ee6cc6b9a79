"""Padding-free batches: examples are packed into one row with a block attention mask.

SFT: several conversations in one row, each attending only to itself (block-diagonal causal mask).
DPO: each pair is laid out once as [prompt | chosen | rejected]; chosen and rejected both continue the
prompt (their position ids restart after it) and rejected cannot see chosen. The prompt is computed
once instead of twice, and no token is padding.

Targets are gathered as (predicting position, token) lists, so the LM head runs only on scored tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from torch import Tensor

    from alignkit.data.template import TokenizedConversation, TokenizedPair

__all__ = ["PackedBatch", "PairBatch", "pack_conversations", "pack_pairs", "block_causal_mask"]

# [start, end) spans that tile a single packed row, no attention crossing them: lets attention run per span
# (sum of span^2 work) instead of over the whole row under a block mask (row^2 work). See alignkit.models.attention.
Segments = Optional[Tuple[Tuple[int, int], ...]]


@dataclass
class PackedBatch:
    """SFT micro-batch. Shapes: T packed tokens, N scored tokens."""

    input_ids: "Tensor"  # (1, T)
    position_ids: "Tensor"  # (1, T)
    attention_mask: "Tensor"  # (1, 1, T, T) bool, True = may attend
    pred_index: "Tensor"  # (N,) row position whose hidden state predicts the target
    targets: "Tensor"  # (N,)
    num_examples: int
    segments: Segments = None  # [start, end) of each example in the row: attention can run per example

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device: str) -> "PackedBatch":
        return PackedBatch(*(t.to(device) for t in (self.input_ids, self.position_ids, self.attention_mask,
                                                     self.pred_index, self.targets)), self.num_examples, self.segments)


@dataclass
class PairBatch:
    """DPO micro-batch of B pairs packed into R rows. `owner[n]` is 2*i for pair i's chosen reply, 2*i+1 for rejected."""

    input_ids: "Tensor"  # (R, T)
    position_ids: "Tensor"  # (R, T)
    attention_mask: "Tensor"  # (R, 1, T, T) bool
    pred_index: "Tensor"  # (N,) into the flattened (R*T) positions
    targets: "Tensor"  # (N,)
    owner: "Tensor"  # (N,)
    chosen_tokens: "Tensor"  # (B,) float
    rejected_tokens: "Tensor"  # (B,) float
    margin: "Tensor | None"  # (B,)
    index: "Tensor"  # (B,) dataset indices, keys for cached reference log-probs
    logical_tokens: int  # tokens a padded chosen/rejected layout would hold: sum of 2*prompt + chosen + rejected
    segments: Segments = None  # one row only: [start, end) of each pair (and of trailing padding) in it

    @property
    def num_pairs(self) -> int:
        return int(self.chosen_tokens.shape[0])

    def to(self, device: str) -> "PairBatch":
        fields = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in self.__dict__.items()}
        return PairBatch(**fields)


def block_causal_mask(segment: "Tensor", blocked: "Tensor | None" = None) -> "Tensor":
    """(1, 1, T, T) bool mask: token i sees token j iff same segment and j <= i, minus `blocked` (T, T)."""
    import torch

    t = segment.shape[0]
    pos = torch.arange(t)
    mask = (segment[:, None] == segment[None, :]) & (pos[None, :] <= pos[:, None])
    if blocked is not None:
        mask &= ~blocked
    return mask[None, None]


def pack_conversations(examples: Sequence["TokenizedConversation"]) -> PackedBatch:
    """Pack SFT examples into one row; targets are the assistant tokens (loss mask), shifted by one."""
    import torch

    ids, pos, seg, pred, tgt = [], [], [], [], []
    offset = 0
    for k, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids.extend(ex.input_ids)
        pos.extend(range(n))
        seg.extend([k] * n)
        for t in range(1, n):  # token t is predicted by the hidden state at t-1
            if ex.loss_mask[t]:
                pred.append(offset + t - 1)
                tgt.append(ex.input_ids[t])
        offset += n
    segment = torch.tensor(seg)
    return PackedBatch(
        input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]), attention_mask=block_causal_mask(segment),
        pred_index=torch.tensor(pred, dtype=torch.long), targets=torch.tensor(tgt, dtype=torch.long),
        num_examples=len(examples), segments=_spans([len(ex.input_ids) for ex in examples], offset),
    )


def _spans(sizes: Sequence[int], width: int) -> tuple[tuple[int, int], ...]:
    """Consecutive [start, end) spans of `sizes`, plus the padding up to `width` as a span of its own."""
    out, start = [], 0
    for n in sizes:
        out.append((start, start + n))
        start += n
    if start < width:
        out.append((start, width))
    return tuple(out)


def _pair_rows(sizes: Sequence[int], row_tokens: int | None) -> list[list[int]]:
    """Group pairs (in order) into rows of at most `row_tokens` tokens; a longer pair gets a row of its own."""
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(sizes):
        if rows and (row_tokens is None or used + n <= row_tokens):
            rows[-1].append(i)
            used += n
        else:
            rows.append([i])
            used = n
    return rows


def pack_pairs(pairs: Sequence["TokenizedPair"], indices: Sequence[int], row_tokens: int | None = None,
               pad_to_multiple_of: int = 1) -> PairBatch:
    """Pack preference pairs as [prompt | chosen | rejected] segments, several pairs per row.

    Rows hold up to `row_tokens` tokens (None: all pairs in one row) and are right-padded to the longest row.
    With one row the batch also carries each pair's span (`segments`), so attention can run pair by pair.
    Attention under an explicit mask costs row_length^2 whatever the mask hides, so short rows beat one long
    packed row; padding costs matmul work, so rows are filled rather than one pair each. `pred_index` indexes
    the flattened (rows x length) hidden states. Padding tokens form their own segment: nothing real sees them.
    """
    import torch

    sizes = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    groups = _pair_rows(sizes, row_tokens)
    width = max(sum(sizes[i] for i in g) for g in groups)
    # CUDA's fused attention kernels take an explicit mask only when its last dimension is aligned (multiple of
    # 8 / 16 elements); otherwise PyTorch falls back to the unfused kernel, which was ~4x slower per step on an H200
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    all_ids: list[list[int]] = []
    all_pos: list[list[int]] = []
    masks = []
    pred: list[int] = []
    tgt: list[int] = []
    owner: list[int] = []
    logical = 0
    for r, group in enumerate(groups):
        ids: list[int] = []
        pos: list[int] = []
        seg: list[int] = []
        part: list[int] = []  # 0 prompt, 1 chosen, 2 rejected, 3 padding
        base = r * width
        for i in group:
            pair = pairs[i]
            start, p = len(ids), len(pair.prompt_ids)
            ids.extend(pair.prompt_ids)
            pos.extend(range(p))
            part.extend([0] * p)
            for kind, reply in ((1, pair.chosen_ids), (2, pair.rejected_ids)):
                first = len(ids)
                ids.extend(reply)
                pos.extend(range(p, p + len(reply)))
                part.extend([kind] * len(reply))
                # reply token k is predicted by reply token k-1, the first one by the last prompt token
                pred.extend([base + start + p - 1] + [base + t for t in range(first, first + len(reply) - 1)])
                tgt.extend(reply)
                owner.extend([2 * i + kind - 1] * len(reply))
            seg.extend([i] * (len(ids) - start))
            logical += 2 * p + len(pair.chosen_ids) + len(pair.rejected_ids)
        pad = width - len(ids)
        ids.extend([0] * pad)
        pos.extend([0] * pad)
        seg.extend([-1] * pad)
        part.extend([3] * pad)
        segment, parts = torch.tensor(seg), torch.tensor(part)
        blocked = (parts[:, None] == 2) & (parts[None, :] == 1)  # rejected must not see chosen
        masks.append(block_causal_mask(segment, blocked))
        all_ids.append(ids)
        all_pos.append(pos)
    margins = [pair.margin for pair in pairs]
    return PairBatch(
        input_ids=torch.tensor(all_ids), position_ids=torch.tensor(all_pos), attention_mask=torch.cat(masks),
        pred_index=torch.tensor(pred, dtype=torch.long), targets=torch.tensor(tgt, dtype=torch.long),
        owner=torch.tensor(owner, dtype=torch.long),
        chosen_tokens=torch.tensor([float(len(p.chosen_ids)) for p in pairs]),
        rejected_tokens=torch.tensor([float(len(p.rejected_ids)) for p in pairs]),
        margin=None if all(m is None for m in margins) else torch.tensor([m or 0.0 for m in margins]),
        index=torch.tensor(list(indices), dtype=torch.long), logical_tokens=logical,
        segments=_spans([sizes[i] for i in groups[0]], width) if len(groups) == 1 else None,
    )
