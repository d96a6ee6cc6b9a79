"""Value-side maths for PPO: generalized advantage estimation (vectorized) and the clipped value loss.

Tensors are (B, T): B responses, T the longest response; `mask` is 1.0 on response tokens, 0.0 on the
right padding. Position t holds the value of the state *before* response token t and the reward
received for emitting it (the reward-model score sits on the last token).

References:
- Schulman et al. (2016), "High-Dimensional Continuous Control Using Generalized Advantage
  Estimation", Eq. 16: A_t = sum_{l>=0} (gamma*lambda)^l delta_{t+l},
  delta_t = r_t + gamma V(s_{t+1}) - V(s_t).
- Schulman et al. (2017), PPO; Ziegler et al. (2019) and Ouyang et al. (2022) (InstructGPT) use the
  clipped value loss 0.5 * max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2);
  see also Engstrom et al. (2020), "Implementation Matters in Deep RL", Sec. 3.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["discount_matrix", "gae", "clipped_value_loss"]


def discount_matrix(length: int, factor: float, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """(T, T) upper-triangular D with D[t, s] = factor^(s - t) for s >= t, else 0.

    `x @ D.T` is the discounted reverse cumulative sum y_t = sum_{s>=t} factor^(s-t) x_s for every t
    at once: one matrix product instead of a Python loop over time steps. O(T^2) memory, which is
    small for response lengths (T = 1024 -> 4 MB in fp32).
    """
    idx = torch.arange(length, device=device)
    gap = (idx[None, :] - idx[:, None]).to(dtype)  # (T, T): s - t
    upper = gap >= 0
    # where(): the lower triangle would be factor^(negative) (inf for factor 0); 0^0 = 1 on the diagonal
    return torch.where(upper, torch.pow(torch.tensor(factor, dtype=dtype, device=device), gap.clamp(min=0)),
                       torch.zeros((), dtype=dtype, device=device))


def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimates and returns, computed without a loop over time.

    Args:
        rewards: (B, T) per-token rewards (KL penalty on each token, score added on the last one).
        values: (B, T) value estimates V(s_t) from the rollout (old) value function.
        mask: (B, T) 1.0 on response tokens; the state after the last token is terminal (V = 0).

    Returns:
        advantages (B, T) and returns = advantages + values (B, T), both zero on padding.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    next_values = torch.cat([values[:, 1:], values.new_zeros(values.shape[0], 1)], dim=1)  # V(s_{t+1})
    deltas = (rewards + gamma * next_values - values) * mask  # (B, T); zero beyond each response
    d = discount_matrix(values.shape[1], gamma * lam, dtype=values.dtype, device=values.device)
    advantages = (deltas @ d.T) * mask
    return advantages, (advantages + values) * mask


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, *,
                       clip: float | None = 0.2) -> tuple[Tensor, Tensor]:
    """Per-token clipped value loss and whether the clipped branch was taken.

    Args:
        values: (B, T) current value predictions (differentiable).
        old_values: (B, T) predictions at rollout time.
        returns: (B, T) GAE returns (targets).
        clip: eps_v; None disables clipping (plain 0.5 * (V - R)^2).

    Returns:
        (B, T) loss per token (aggregate with the mask in the trainer), and (B, T) float 1.0 where
        the clipped error was the larger one (the "value clip fraction").
    """
    unclipped = (values - returns).pow(2)
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped)
    clipped_v = old_values + (values - old_values).clamp(-clip, clip)
    clipped = (clipped_v - returns).pow(2)
    return 0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).to(values.dtype).detach()
