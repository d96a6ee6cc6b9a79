"""Reward-model losses: Bradley-Terry with an optional margin and reward centering, and ensemble spread.

All functions are pure tensor maths, tested against hand-computed numbers in tests/unit/test_losses_rl.py.

References:
- Bradley & Terry (1952), "Rank analysis of incomplete block designs": P(a > b) = sigma(r_a - r_b).
- Ouyang et al. (2022), InstructGPT, Eq. 1: loss = -log sigma(r(x, y_w) - r(x, y_l)).
- Touvron et al. (2023), Llama 2, Eq. 2: a preference-strength margin m inside the sigmoid,
  -log sigma(r_w - r_l - m).
- Eisenstein et al. (2023), "Helping or Herding?", Sec. 3: an auxiliary loss eta * (r_w + r_l)^2 keeps
  rewards centred on zero (the BT loss only fixes differences), which makes ensemble members comparable.
- Lakshminarayanan et al. (2017), deep ensembles; Coste et al. (2024), "Reward model ensembles help
  mitigate overoptimization": the spread of an ensemble is a signal of uncertainty / reward hacking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RewardLossOutput", "bradley_terry_loss", "ensemble_disagreement"]


@dataclass
class RewardLossOutput:
    loss: Tensor  # (B,) per-pair loss (mean it, or weight it, in the trainer)
    margin: Tensor  # (B,) r_chosen - r_rejected, detached
    accuracy: Tensor  # (B,) 1.0 where the chosen reply scored higher


def bradley_terry_loss(chosen: Tensor, rejected: Tensor, *, margin: Tensor | None = None,
                       center_coef: float = 0.0) -> RewardLossOutput:
    """Pairwise Bradley-Terry loss on scalar rewards.

    Args:
        chosen: (B,) rewards of the preferred replies.
        rejected: (B,) rewards of the other replies.
        margin: optional (B,) required gap m (Llama 2): loss = -log sigma(r_c - r_r - m).
        center_coef: eta >= 0; adds eta * (r_c + r_r)^2 per pair (reward centering).

    Returns:
        per-pair loss, the detached reward margin, and per-pair accuracy.
    """
    diff = chosen - rejected  # (B,)
    logits = diff - margin.to(diff.dtype) if margin is not None else diff
    loss = -F.logsigmoid(logits)  # stable for large |logits|
    if center_coef:
        loss = loss + center_coef * (chosen + rejected).pow(2)
    d = diff.detach()
    return RewardLossOutput(loss=loss, margin=d, accuracy=(d > 0).to(d.dtype))


def ensemble_disagreement(rewards: Tensor) -> Tensor:
    """(K, B) rewards from K ensemble members -> (B,) population standard deviation across members.

    Zero for a single member. The population form (divide by K) keeps two members at +-d apart at d.
    """
    if rewards.dim() != 2:
        raise ValueError(f"expected (members, batch) rewards, got shape {tuple(rewards.shape)}")
    if rewards.shape[0] == 1:
        return torch.zeros_like(rewards[0])
    return rewards.std(dim=0, correction=0)
