"""Padding-free batches of RL rollouts: a prompt and its G sampled completions share one packed segment.

Layout of one group: [prompt | completion 1 | completion 2 | ... | completion G]. Every completion's
position ids restart after the prompt and it attends to the prompt and to itself only, never to its
siblings. So the prompt is computed once for all G samples (TRL computes it G times, padded), and no
token is padding. Several groups may share a row (block-diagonal); the LM head runs only on completion
tokens (see `alignkit.train.loop.TokenLogprobs`).

Per-token tensors come back flat, (N,), with `owner` (which completion) and `token_pos` (its index in
that completion), so `to_grid` turns them into the (S, T) layout the RL losses use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["RolloutGroup", "RolloutBatch", "pack_groups", "to_grid"]


@dataclass(frozen=True)
class RolloutGroup:
    prompt_ids: list[int]  # rendered prompt ending with the assistant header
    completions: list[list[int]]  # sampled token ids (ending with EOS when the model stopped)
    index: list[int]  # each completion's index in the step's rollout list (keys for rewards, old log-probs)


@dataclass
class RolloutBatch:
    """S completions from one or more groups packed into one row. N = total completion tokens."""

    input_ids: "Tensor"  # (1, T)
    position_ids: "Tensor"  # (1, T)
    attention_mask: "Tensor"  # (1, 1, T, T) bool, True = may attend
    pred_index: "Tensor"  # (N,) row position whose hidden state predicts the target
    targets: "Tensor"  # (N,)
    owner: "Tensor"  # (N,) completion 0..S-1 within this batch
    token_pos: "Tensor"  # (N,) position of the token within its completion
    lengths: "Tensor"  # (S,) tokens per completion
    index: "Tensor"  # (S,) completion indices in the step's rollout list
    packed_tokens: int  # T: what the model computes
    logical_tokens: int  # sum over completions of prompt + completion: what a padded layout would hold, minus padding

    @property
    def num_samples(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def max_length(self) -> int:
        return int(self.lengths.max()) if self.num_samples else 0

    def to(self, device: str) -> "RolloutBatch":
        fields = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in self.__dict__.items()}
        return RolloutBatch(**fields)


def pack_groups(groups: Sequence[RolloutGroup]) -> RolloutBatch:
    """Pack groups into one row; completion k of a group sees the group's prompt and its own tokens."""
    import torch

    from alignkit.data.batch import block_causal_mask

    ids: list[int] = []
    pos: list[int] = []
    seg: list[int] = []  # one segment per group: the block-diagonal part
    part: list[int] = []  # 0 for prompt tokens, k+1 for tokens of the group's k-th completion
    pred: list[int] = []
    tgt: list[int] = []
    owner: list[int] = []
    tpos: list[int] = []
    lengths: list[int] = []
    index: list[int] = []
    logical = 0
    for g, group in enumerate(groups):
        if not group.completions:
            continue
        start, p = len(ids), len(group.prompt_ids)
        if p == 0:
            raise ValueError("a rollout group has an empty prompt")
        ids.extend(group.prompt_ids)
        pos.extend(range(p))
        part.extend([0] * p)
        for k, (completion, idx) in enumerate(zip(group.completions, group.index)):
            if not completion:
                raise ValueError(f"rollout {idx} has no tokens; sample at least one token per completion")
            first, n = len(ids), len(completion)
            ids.extend(completion)
            pos.extend(range(p, p + n))
            part.extend([k + 1] * n)
            # token j is predicted by token j-1; the first one by the last prompt token
            pred.extend([start + p - 1] + list(range(first, first + n - 1)))
            tgt.extend(completion)
            owner.extend([len(lengths)] * n)
            tpos.extend(range(n))
            lengths.append(n)
            index.append(idx)
            logical += p + n
        seg.extend([g] * (len(ids) - start))
    if not lengths:
        raise ValueError("no completions to pack")
    segment, parts = torch.tensor(seg), torch.tensor(part)
    # within a group, a completion token must not see another completion's tokens
    blocked = (parts[:, None] > 0) & (parts[None, :] > 0) & (parts[:, None] != parts[None, :])
    return RolloutBatch(
        input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]),
        attention_mask=block_causal_mask(segment, blocked),
        pred_index=torch.tensor(pred, dtype=torch.long), targets=torch.tensor(tgt, dtype=torch.long),
        owner=torch.tensor(owner, dtype=torch.long), token_pos=torch.tensor(tpos, dtype=torch.long),
        lengths=torch.tensor(lengths, dtype=torch.long), index=torch.tensor(index, dtype=torch.long),
        packed_tokens=len(ids), logical_tokens=logical,
    )


def to_grid(flat: "Tensor", batch: RolloutBatch, width: int | None = None, fill: float = 0.0) -> "Tensor":
    """(N,) per-token values -> (S, width) padded grid (differentiable w.r.t. `flat`)."""
    import torch

    width = width or batch.max_length
    grid = torch.full((batch.num_samples, width), fill, dtype=flat.dtype, device=flat.device)
    return grid.index_put((batch.owner, batch.token_pos), flat)
