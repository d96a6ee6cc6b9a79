"""Pairwise preference losses: DPO and its variants, as pure tensor functions.

Every function takes one value per preference pair, shape (B,), and returns per-pair losses (B,);
the trainer averages. Notation (as in TRL / OpenRLHF):

- logπ(y|x): log-probability of a completion, SUMMED over its tokens;
- logratio  = logπ(y|x) - logπ_ref(y|x);   Δ = logratio(y_w) - logratio(y_l);
- ℓ = logπ(y|x) / |y|, the length-averaged (per-token) log-probability, used by the
  length-normalized losses (IPO as TRL computes it, SimPO, ORPO).

`preference_loss` is the one entry point trainers call: it turns summed log-probs and token counts
into the inputs each loss needs, dispatches on `loss_type`, and returns detached implicit rewards
for logging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOSS_TYPES",
    "REFERENCE_FREE",
    "PreferenceLossOutput",
    "dpo_sigmoid",
    "robust_dpo",
    "ipo",
    "hinge",
    "simpo",
    "orpo",
    "log1mexp",
    "preference_loss",
]

LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge", "robust", "simpo", "orpo")
REFERENCE_FREE: frozenset[str] = frozenset({"simpo", "orpo"})

_USES_LABEL_SMOOTHING = frozenset({"sigmoid", "robust"})
_USES_MARGIN = frozenset({"sigmoid"})
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class PreferenceLossOutput:
    """Per-pair loss and the implicit rewards trainers log (reward accuracy, margins)."""

    loss: Tensor  # (B,), differentiable
    chosen_rewards: Tensor  # (B,), detached
    rejected_rewards: Tensor  # (B,), detached


def dpo_sigmoid(
    chosen_logratios: Tensor,
    rejected_logratios: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    margin: Tensor | None = None,
) -> Tensor:
    """DPO, optionally conservative (cDPO) and with a per-pair target margin m.

    loss = -(1-ε)·logσ(βΔ - m) - ε·logσ(-(βΔ - m))

    ε = 0 is DPO (Rafailov et al. 2023, "Direct Preference Optimization", Eq. 7). ε > 0 is
    conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences", Eq. 3; OpenRLHF
    `DPOLoss`): the label is assumed flipped with probability ε, so the loss has a finite minimum.
    The margin is subtracted after scaling by β, like the reward-model margin in Llama 2 / TRL's
    `RewardTrainer` (and the offset of ODPO, Amini et al. 2024).
    """
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    if margin is not None:
        logits = logits - margin
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def robust_dpo(
    chosen_logratios: Tensor,
    rejected_logratios: Tensor,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """Robust DPO (rDPO; Chowdhury, Kini & Natarajan 2024, "Provably Robust DPO", Sec. 3).

    loss = [-(1-ε)·logσ(βΔ) + ε·logσ(-βΔ)] / (1 - 2ε)

    An unbiased estimate of the clean DPO loss when labels flip with probability ε. Unlike cDPO it
    is unbounded below per pair (for ε > 0), which is expected: only its mean is meaningful.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    eps = label_smoothing
    return (-(1.0 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1.0 - 2.0 * eps)


def ipo(chosen_logratios_avg: Tensor, rejected_logratios_avg: Tensor, beta: float) -> Tensor:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", Eq. 17, with τ = β): loss = (Δ̄ - 1/(2β))².

    Δ̄ is built from PER-TOKEN-AVERAGED log-ratios, as TRL does; the paper writes it with
    sequence log-likelihoods. The loss is minimal (zero) at Δ̄ = 1/(2β): IPO regresses the
    log-ratio gap to a target instead of pushing it to infinity.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    gap = chosen_logratios_avg - rejected_logratios_avg  # (B,)
    return (gap - 1.0 / (2.0 * beta)) ** 2


def hinge(chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float) -> Tensor:
    """Hinge loss on reference-normalized likelihoods: loss = relu(1 - βΔ).

    The rank-calibration loss of SLiC-HF (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood
    Calibration with Human Feedback") with margin δ = 1/β, scaled by β, applied to log-ratios
    as in RSO (Liu et al. 2024, "Statistical Rejection Sampling Improves Preference Optimization")
    and TRL's `loss_type="hinge"`. Zero once βΔ ≥ 1.
    """
    return torch.relu(1.0 - beta * (chosen_logratios - rejected_logratios))


def simpo(
    policy_chosen_logps_avg: Tensor,
    policy_rejected_logps_avg: Tensor,
    beta: float,
    gamma: float,
) -> Tensor:
    """SimPO (Meng, Xia & Chen 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward", Eq. 6): loss = -logσ(β(ℓ_w - ℓ_l) - γ).

    Reference-free; ℓ is the length-averaged log-prob. γ is the absolute target margin (TRL's
    `simpo_gamma`); the SimPO code base instead sets γ/β ("gamma_beta_ratio"). CPO's extra
    NLL term is not part of this function.
    """
    logits = beta * (policy_chosen_logps_avg - policy_rejected_logps_avg) - gamma  # (B,)
    return -F.logsigmoid(logits)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - eˣ) for x ≤ 0, stable at both ends (Mächler 2012, "Accurately Computing
    log(1 - exp(-|a|))"): log(-expm1(x)) for x > -ln2, log1p(-exp(x)) below.

    x is clamped to ≤ -eps(dtype) so that x = 0 (probability one) gives a large finite value
    instead of -inf. Each branch only ever sees inputs on its own side of -ln2, so neither
    produces inf/NaN that `torch.where` would turn into NaN gradients.
    """
    x = x.clamp(max=-torch.finfo(x.dtype).eps)
    near_zero = x > -_LN2
    small = torch.log(-torch.expm1(x.clamp(min=-_LN2)))  # accurate for -ln2 < x < 0
    large = torch.log1p(-torch.exp(x.clamp(max=-_LN2)))  # accurate for x <= -ln2
    return torch.where(near_zero, small, large)


def orpo(
    policy_chosen_logps_avg: Tensor,
    policy_rejected_logps_avg: Tensor,
    beta: float,
) -> tuple[Tensor, Tensor]:
    """Odds-ratio term of ORPO (Hong, Lee & Thorne 2024, "ORPO: Monolithic Preference
    Optimization without Reference Model", Eqs. 6-7).

    With p = exp(ℓ) the length-normalized likelihood and odds = p / (1 - p):
        log_odds = log(odds_w / odds_l) = (ℓ_w - ℓ_l) - (log(1 - e^ℓ_w) - log(1 - e^ℓ_l))
        or_loss  = -β·logσ(log_odds)        (β is the paper's λ)
    Returns (or_loss, log_odds), both (B,). The full ORPO loss adds the chosen NLL, -ℓ_w;
    `preference_loss` does that.
    """
    log_odds = (policy_chosen_logps_avg - policy_rejected_logps_avg) - (
        log1mexp(policy_chosen_logps_avg) - log1mexp(policy_rejected_logps_avg)
    )  # (B,)
    return -beta * F.logsigmoid(log_odds), log_odds


def _check_inputs(loss_type: str, tensors: dict[str, Tensor | None]) -> None:
    """Dispatch-time checks that need no host sync: type names, presence, shapes."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid types: {', '.join(LOSS_TYPES)}")
    if loss_type not in REFERENCE_FREE:
        missing = [k for k in ("ref_chosen_logps", "ref_rejected_logps") if tensors[k] is None]
        if missing:
            raise ValueError(
                f"loss_type {loss_type!r} needs reference log-probs but got none for "
                f"{', '.join(missing)}; reference-free types are {', '.join(sorted(REFERENCE_FREE))}"
            )
    shape = tensors["policy_chosen_logps"].shape
    for name, t in tensors.items():
        if t is not None and t.shape != shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} (one value per pair)"
            )
    if len(shape) != 1:
        raise ValueError(f"preference losses take (B,) tensors, got shape {tuple(shape)}")


def chosen_nll(policy_chosen_logps: Tensor, chosen_tokens: Tensor) -> Tensor:
    """Per-pair mean negative log-likelihood of the chosen reply, -logπ(y_w|x) / |y_w| (B,).

    Added to a preference loss with a weight it is the SFT term of RPO (Pang et al., 2024; TRL's `rpo_alpha`): DPO
    alone can raise the chosen-vs-rejected margin while lowering both likelihoods, and this term keeps pulling the
    chosen reply up, which is what changes greedy generations.
    """
    return -policy_chosen_logps / chosen_tokens


def preference_loss(
    loss_type: str,
    *,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_tokens: Tensor,
    rejected_tokens: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
    beta: float,
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    margin: Tensor | None = None,
) -> PreferenceLossOutput:
    """Per-pair preference loss of `loss_type` (one of LOSS_TYPES) from summed log-probs (B,).

    `chosen_tokens` / `rejected_tokens` are completion lengths (B,), ≥ 1, used for the
    length-averaged losses. Reference log-probs are required unless the type is in REFERENCE_FREE
    (where they are ignored). `label_smoothing` is only accepted by sigmoid/robust and `margin` only
    by sigmoid; passing them elsewhere is an error rather than a silent no-op.

    Implicit rewards (detached): β·(logπ - logπ_ref), summed, for reference-based types (IPO too);
    β·ℓ for simpo/orpo. For orpo the loss is the chosen per-token NLL (-ℓ_w) plus the odds-ratio term.
    """
    _check_inputs(loss_type, {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "chosen_tokens": chosen_tokens,
        "rejected_tokens": rejected_tokens,
        "ref_chosen_logps": ref_chosen_logps,
        "ref_rejected_logps": ref_rejected_logps,
        "margin": margin,
    })
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if label_smoothing != 0.0 and loss_type not in _USES_LABEL_SMOOTHING:
        raise ValueError(
            f"label_smoothing is used by {sorted(_USES_LABEL_SMOOTHING)} only, not {loss_type!r}"
        )
    if margin is not None and loss_type not in _USES_MARGIN:
        raise ValueError(f"margin is used by {sorted(_USES_MARGIN)} only, not {loss_type!r}")

    if loss_type in REFERENCE_FREE:
        chosen_avg = policy_chosen_logps / chosen_tokens  # ℓ_w, (B,)
        rejected_avg = policy_rejected_logps / rejected_tokens  # ℓ_l, (B,)
        if loss_type == "simpo":
            loss = simpo(chosen_avg, rejected_avg, beta, simpo_gamma)
        else:
            or_loss, _ = orpo(chosen_avg, rejected_avg, beta)
            loss = -chosen_avg + or_loss  # chosen NLL per token + odds-ratio term
        return PreferenceLossOutput(loss, (beta * chosen_avg).detach(), (beta * rejected_avg).detach())

    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    if loss_type == "sigmoid":
        loss = dpo_sigmoid(chosen_logratios, rejected_logratios, beta, label_smoothing, margin)
    elif loss_type == "robust":
        loss = robust_dpo(chosen_logratios, rejected_logratios, beta, label_smoothing)
    elif loss_type == "hinge":
        loss = hinge(chosen_logratios, rejected_logratios, beta)
    else:  # ipo: per-token-averaged log-ratios
        loss = ipo(chosen_logratios / chosen_tokens, rejected_logratios / rejected_tokens, beta)
    return PreferenceLossOutput(
        loss, (beta * chosen_logratios).detach(), (beta * rejected_logratios).detach()
    )
