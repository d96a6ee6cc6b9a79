"""Policy-side maths for PPO and group-relative RL: KL estimators, ratios, the clipped objective,
advantage whitening, group-relative advantages, the adaptive KL coefficient and loss aggregation.

Tensors are (B, T) over B sampled responses and their T (padded) tokens; `mask` is 1.0 on response
tokens. Log-probs are of the sampled tokens. Every function is tested against hand-computed numbers
(tests/unit/test_losses_rl*.py).

References:
- Schulman (2020), "Approximating KL Divergence" (blog note): with samples y ~ pi and
  log r = log pi_ref(y) - log pi(y): k1 = -log r (unbiased, high variance), k2 = (log r)^2 / 2
  (biased, low variance), k3 = (r - 1) - log r (unbiased, low variance, always >= 0).
- Schulman et al. (2017), "Proximal Policy Optimization Algorithms", Eq. 7: the clipped surrogate
  min(rho A, clip(rho, 1-eps, 1+eps) A).
- Yu et al. (2025), DAPO: decoupled clip range (eps_low, eps_high, "clip-higher") and the token-level
  loss normalized by the total number of tokens in the batch.
- Zheng et al. (2025), GSPO: the sequence-level ratio s = exp(mean_t log(pi/pi_old)).
- Shao et al. (2024), DeepSeekMath (GRPO), Eq. 3: A_i = (r_i - mean(r)) / std(r) within a group.
- Ahmadian et al. (2024), "Back to Basics" (RLOO), after Kool et al. (2019): the leave-one-out baseline
  A_i = r_i - (sum_j r_j - r_i) / (G - 1).
- Liu et al. (2025), "Understanding R1-Zero-Like Training" (Dr. GRPO): no std scaling and a constant
  loss normalizer, to avoid question-difficulty and length biases.
- Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", Sec. 2.2: the adaptive
  KL coefficient beta <- beta * (1 + K_beta * clip(KL / KL_target - 1, -0.2, 0.2)).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "KLEstimator", "kl_penalty", "policy_ratio", "clipped_policy_loss", "whiten", "group_advantages",
    "adaptive_kl_coef", "aggregate", "masked_mean",
]

KLEstimator = Literal["k1", "k2", "k3"]


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over positions where mask is 1 (all of them, or along `dim`)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (see Schulman 2020).

    Args:
        logp: (...) log pi(y_t) of the sampled tokens.
        ref_logp: (...) log pi_ref(y_t) of the same tokens.
    """
    log_r = ref_logp - logp
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r.pow(2)
    if estimator == "k3":
        return torch.expm1(log_r) - log_r  # (r - 1) - log r, expm1 for accuracy near r = 1
    raise ValueError(f"unknown KL estimator {estimator!r}; use k1, k2 or k3")


def policy_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor,
                 level: Literal["token", "sequence"] = "token") -> Tensor:
    """(B, T) importance ratios pi / pi_old for the clipped objective.

    token: rho_t = exp(logp_t - old_t) (PPO, GRPO).
    sequence (GSPO): every token of response i carries s_i = exp(mean_t (logp - old)) as its value,
    with gradient s_i * grad logp_t, so the clip decision is made once per response.
    """
    log_ratio = logp - old_logp
    if level == "token":
        return torch.exp(log_ratio)
    if level == "sequence":
        seq = masked_mean(log_ratio, mask, dim=1).detach()[:, None]  # (B, 1)
        return torch.exp(seq + logp - logp.detach())
    raise ValueError(f"unknown ratio level {level!r}; use token or sequence")


def clipped_policy_loss(ratio: Tensor, advantages: Tensor, *, clip_low: float = 0.2,
                        clip_high: float | None = None) -> tuple[Tensor, Tensor]:
    """Per-token PPO clipped surrogate loss, max(-A rho, -A clip(rho, 1-eps_low, 1+eps_high)).

    Args:
        ratio: (B, T) importance ratios (differentiable), see `policy_ratio`.
        advantages: (B, T) advantages, or (B, 1) for one advantage per response.
        clip_low: eps_low; clip_high: eps_high (DAPO clip-higher), defaults to clip_low.

    Returns:
        (B, T) loss per token, and (B, T) float 1.0 where the clipped branch was active (clip fraction).
    """
    high = clip_low if clip_high is None else clip_high
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + high)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).to(ratio.dtype).detach()


def whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalize `x` to unit variance over the masked positions (and zero mean unless shift_mean=False).

    Uses the unbiased variance, as the common PPO implementations do; padding stays zero.
    """
    mask = mask.to(x.dtype)
    n = mask.sum()
    mean = (x * mask).sum() / n.clamp(min=1.0)
    var = ((x - mean).pow(2) * mask).sum() / (n - 1).clamp(min=1.0)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def group_advantages(rewards: Tensor, *, baseline: Literal["mean", "rloo"] = "mean",
                     scale: Literal["group", "batch", "none"] = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages for P prompts with G sampled responses each, no value model.

    Args:
        rewards: (P, G) one scalar reward per response.
        baseline: "mean" (GRPO): r - mean of the group; "rloo": r - mean of the *other* G-1 responses.
        scale: divide by the group's std (GRPO), the whole batch's std, or not at all (Dr. GRPO).
        eps: added to the std so a group of equal rewards gives zero advantages, not NaN.

    Returns:
        (P, G) advantages.
    """
    p, g = rewards.shape
    if baseline == "mean":
        adv = rewards - rewards.mean(dim=1, keepdim=True)
    elif baseline == "rloo":
        if g < 2:
            raise ValueError("the leave-one-out baseline needs at least 2 responses per prompt")
        adv = rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / (g - 1)
    else:
        raise ValueError(f"unknown baseline {baseline!r}; use mean or rloo")
    if scale == "group":
        std = rewards.std(dim=1, keepdim=True) if g > 1 else torch.zeros_like(rewards[:, :1])
        return adv / (std + eps)
    if scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        return adv / (std + eps)
    if scale == "none":
        return adv
    raise ValueError(f"unknown scale {scale!r}; use group, batch or none")


def adaptive_kl_coef(coef: float, observed_kl: float, *, target: float, horizon: float,
                     n_steps: int) -> float:
    """Ziegler et al. (2019) proportional controller: move beta so the observed KL tracks `target`.

    Args:
        coef: current beta.
        observed_kl: mean per-response KL(pi || pi_ref) of the last batch.
        target: desired KL; horizon: how many samples the controller takes to react;
        n_steps: samples (responses) in the last batch.
    """
    error = max(-0.2, min(0.2, observed_kl / target - 1.0))
    return coef * (1.0 + error * n_steps / horizon)


def aggregate(loss: Tensor, mask: Tensor, mode: Literal["token", "sequence", "fixed"], *,
              tokens: float, sequences: float, max_tokens: float = 1.0) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar with a denominator fixed for the whole step.

    The denominators are counts over the *entire* optimizer step (all micro-batches, all processes),
    passed in by the trainer, so summing micro-batch results equals one big batch (1 x 8 == 8 x 1).

    token (DAPO): sum over tokens / tokens in the step.
    sequence (GRPO, Shao et al.): sum over responses of their token mean / responses in the step.
    fixed (Dr. GRPO): sum over tokens / (responses in the step * max_tokens).
    """
    mask = mask.to(loss.dtype)
    if mode == "token":
        return (loss * mask).sum() / tokens
    if mode == "sequence":
        per_seq = (loss * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return per_seq.sum() / sequences
    if mode == "fixed":
        return (loss * mask).sum() / (sequences * max_tokens)
    raise ValueError(f"unknown aggregation {mode!r}; use token, sequence or fixed")
