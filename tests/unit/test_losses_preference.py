"""Preference losses against numbers computed by hand (with `math`, never the code under test)."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses.preference import (
    LOSS_TYPES,
    REFERENCE_FREE,
    dpo_sigmoid,
    hinge,
    ipo,
    log1mexp,
    orpo,
    preference_loss,
    robust_dpo,
    simpo,
)


def t(*values: float) -> torch.Tensor:
    """A (B,) float64 tensor, so hand values can be checked to ~1e-12."""
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected: float | list[float], tol: float = 1e-10) -> None:
    expected_t = torch.as_tensor(expected, dtype=actual.dtype).expand_as(actual)
    torch.testing.assert_close(actual, expected_t, rtol=tol, atol=tol)


def neg_logsigmoid(z: float) -> float:
    """-log σ(z) = log(1 + e^-z), by hand."""
    return math.log1p(math.exp(-z))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# Shared example: logπ_w = -10, logπ_l = -12, logπ_ref_w = -11, logπ_ref_l = -11.5
#   chosen logratio = -10 - (-11) = 1.0 ; rejected logratio = -12 - (-11.5) = -0.5 ; Δ = 1.5
#   β = 0.1 -> βΔ = 0.15
POLICY = dict(policy_chosen_logps=t(-10.0), policy_rejected_logps=t(-12.0))
REF = dict(ref_chosen_logps=t(-11.0), ref_rejected_logps=t(-11.5))
TOKENS = dict(chosen_tokens=t(4.0), rejected_tokens=t(2.0))
BETA = 0.1
DPO_HAND = 0.6209570477895321  # -logσ(0.15) = log(1 + e^-0.15)


# ---------------------------------------------------------------- DPO / cDPO


def test_dpo_sigmoid_hand_value() -> None:
    assert math.isclose(neg_logsigmoid(0.15), DPO_HAND, rel_tol=1e-15)
    close(dpo_sigmoid(t(1.0), t(-0.5), BETA), DPO_HAND)


def test_dpo_sigmoid_zero_gap_is_log2() -> None:
    # Δ = 0 -> -logσ(0) = log 2 = 0.693147...
    close(dpo_sigmoid(t(0.3), t(0.3), BETA), math.log(2.0))


def test_preference_loss_sigmoid_from_summed_logps() -> None:
    out = preference_loss("sigmoid", **POLICY, **REF, **TOKENS, beta=BETA)
    close(out.loss, DPO_HAND)
    close(out.chosen_rewards, 0.1 * 1.0)  # β·(logπ_w - logπ_ref_w)
    close(out.rejected_rewards, 0.1 * -0.5)


def test_cdpo_hand_value() -> None:
    # ε = 0.1: 0.9·(-logσ(0.15)) + 0.1·(-logσ(-0.15)) = 0.9·0.620957 + 0.1·0.770957 = 0.635957
    hand = 0.9 * neg_logsigmoid(0.15) + 0.1 * neg_logsigmoid(-0.15)
    assert math.isclose(hand, 0.6359570477895321, rel_tol=1e-12)
    close(dpo_sigmoid(t(1.0), t(-0.5), BETA, label_smoothing=0.1), hand)


def test_cdpo_with_zero_smoothing_is_dpo() -> None:
    chosen, rejected = t(1.0, -2.0, 0.7), t(-0.5, 3.0, 0.7)
    expected = [neg_logsigmoid(BETA * (c - r)) for c, r in [(1.0, -0.5), (-2.0, 3.0), (0.7, 0.7)]]
    close(dpo_sigmoid(chosen, rejected, BETA, label_smoothing=0.0), expected)


@pytest.mark.parametrize("eps", [-0.1, 0.6])
def test_cdpo_rejects_bad_smoothing(eps: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_sigmoid(t(1.0), t(0.0), BETA, label_smoothing=eps)


def test_margin_shifts_sigmoid_argument() -> None:
    # m = 0.5: -logσ(βΔ - m) = -logσ(0.15 - 0.5) = -logσ(-0.35) = 0.883382...
    hand = neg_logsigmoid(-0.35)
    assert math.isclose(hand, 0.883382155418777, rel_tol=1e-12)
    close(dpo_sigmoid(t(1.0), t(-0.5), BETA, margin=t(0.5)), hand)
    # A margin m is the same as shrinking Δ by m/β (here 0.5 / 0.1 = 5): Δ = 1.5 - 5 = -3.5.
    close(dpo_sigmoid(t(1.0), t(-0.5), BETA, margin=t(0.5)), neg_logsigmoid(BETA * -3.5))
    # Per pair: a zero margin leaves that pair unchanged; a larger margin increases the loss.
    loss = dpo_sigmoid(t(1.0, 1.0, 1.0), t(-0.5, -0.5, -0.5), BETA, margin=t(0.0, 0.5, 1.0))
    close(loss[0], DPO_HAND)
    assert loss[0] < loss[1] < loss[2]
    out = preference_loss("sigmoid", **POLICY, **REF, **TOKENS, beta=BETA, margin=t(0.5))
    close(out.loss, hand)


def test_dpo_gradient_matches_hand_formula() -> None:
    # d/d(chosen logratio) of -logσ(βΔ) = -β·(1 - σ(βΔ)) = -0.1·(1 - σ(0.15)) = -0.0462570...
    # and the rejected logratio gets the opposite sign.
    chosen = t(1.0).requires_grad_()
    rejected = t(-0.5).requires_grad_()
    dpo_sigmoid(chosen, rejected, BETA).sum().backward()
    hand = -BETA * (1.0 - sigmoid(0.15))
    assert math.isclose(hand, -0.04625701546562504, rel_tol=1e-12)
    close(chosen.grad, hand)
    close(rejected.grad, -hand)


# ---------------------------------------------------------------- robust DPO


def test_robust_hand_value() -> None:
    # ε = 0.1: [0.9·(-logσ(0.15)) + 0.1·logσ(-0.15)] / 0.8 = (0.558861 - 0.077096) / 0.8 = 0.602207
    hand = (0.9 * neg_logsigmoid(0.15) - 0.1 * neg_logsigmoid(-0.15)) / 0.8
    assert math.isclose(hand, 0.602207047789532, rel_tol=1e-12)
    close(robust_dpo(t(1.0), t(-0.5), BETA, label_smoothing=0.1), hand)
    out = preference_loss("robust", **POLICY, **REF, **TOKENS, beta=BETA, label_smoothing=0.1)
    close(out.loss, hand)


def test_robust_at_zero_smoothing_equals_dpo() -> None:
    chosen, rejected = t(1.0, -2.0, 5.0), t(-0.5, 3.0, 0.0)
    torch.testing.assert_close(robust_dpo(chosen, rejected, BETA, 0.0), dpo_sigmoid(chosen, rejected, BETA))


@pytest.mark.parametrize("eps", [0.5, 0.7, -0.01])
def test_robust_rejects_smoothing_outside_range(eps: float) -> None:
    with pytest.raises(ValueError, match="0.5"):
        robust_dpo(t(1.0), t(0.0), BETA, label_smoothing=eps)


# ---------------------------------------------------------------- IPO


def test_ipo_hand_value_uses_per_token_average() -> None:
    # Summed logratios: chosen 1.0 over 4 tokens -> 0.25; rejected -0.5 over 2 tokens -> -0.25.
    # Δ̄ = 0.5; β = 0.1 -> 1/(2β) = 5; loss = (0.5 - 5)² = 20.25
    out = preference_loss("ipo", **POLICY, **REF, **TOKENS, beta=BETA)
    close(out.loss, 20.25)
    close(ipo(t(0.25), t(-0.25), BETA), 20.25)
    # Rewards stay summed β·logratio, like the other reference-based losses.
    close(out.chosen_rewards, 0.1)
    close(out.rejected_rewards, -0.05)


def test_ipo_minimum_at_half_inverse_beta() -> None:
    beta = 0.25  # target Δ̄ = 1/(2·0.25) = 2
    gaps = torch.linspace(-1.0, 5.0, 601, dtype=torch.float64)  # step 0.01, contains 2.0
    losses = ipo(gaps, torch.zeros_like(gaps), beta)
    assert math.isclose(gaps[losses.argmin()].item(), 2.0, abs_tol=1e-9)
    close(ipo(t(2.0), t(0.0), beta), 0.0)
    gap = t(2.0).requires_grad_()
    ipo(gap, t(0.0), beta).sum().backward()
    close(gap.grad, 0.0)  # d/dΔ̄ (Δ̄ - 2)² = 0 at the target


# ---------------------------------------------------------------- hinge


def test_hinge_hand_values() -> None:
    # βΔ = 0.15 -> 1 - 0.15 = 0.85; βΔ = 1 -> 0; βΔ = 2 -> 0; βΔ = -0.5 -> 1.5
    close(hinge(t(1.0, 10.0, 20.0, -5.0), t(-0.5, 0.0, 0.0, 0.0), BETA), [0.85, 0.0, 0.0, 1.5])
    out = preference_loss("hinge", **POLICY, **REF, **TOKENS, beta=BETA)
    close(out.loss, 0.85)


def test_hinge_flat_once_margin_met() -> None:
    chosen = t(15.0).requires_grad_()  # βΔ = 1.5 ≥ 1
    hinge(chosen, t(0.0), BETA).sum().backward()
    close(chosen.grad, 0.0)


# ---------------------------------------------------------------- SimPO


def test_simpo_hand_value_and_gamma() -> None:
    # ℓ_w = -2/4 = -0.5, ℓ_l = -3/3 = -1.0; β = 2:  β(ℓ_w - ℓ_l) = 1.0
    # γ = 0.5 -> -logσ(0.5) = 0.474077 ; γ = 0 -> -logσ(1.0) = 0.313262
    hand_gamma, hand_zero = neg_logsigmoid(0.5), neg_logsigmoid(1.0)
    assert math.isclose(hand_gamma, 0.4740769841801067, rel_tol=1e-12)
    assert math.isclose(hand_zero, 0.31326168751822286, rel_tol=1e-12)
    close(simpo(t(-0.5), t(-1.0), beta=2.0, gamma=0.5), hand_gamma)
    close(simpo(t(-0.5), t(-1.0), beta=2.0, gamma=0.0), hand_zero)
    logps = dict(policy_chosen_logps=t(-2.0), policy_rejected_logps=t(-3.0))
    tokens = dict(chosen_tokens=t(4.0), rejected_tokens=t(3.0))
    out = preference_loss("simpo", **logps, **tokens, beta=2.0, simpo_gamma=0.5)
    close(out.loss, hand_gamma)
    close(out.chosen_rewards, 2.0 * -0.5)  # β·ℓ
    close(out.rejected_rewards, 2.0 * -1.0)


def test_simpo_larger_gamma_larger_loss() -> None:
    losses = [simpo(t(-0.5), t(-1.0), 2.0, g).item() for g in (0.0, 0.5, 1.0, 2.0)]
    assert losses == sorted(losses)


# ---------------------------------------------------------------- ORPO


def direct_log_odds_ratio(lw: float, ll: float) -> float:
    """log(odds_w / odds_l) with odds = p / (1 - p), p = exp(ℓ): the definition, by hand."""
    pw, pl = math.exp(lw), math.exp(ll)
    return math.log((pw / (1.0 - pw)) / (pl / (1.0 - pl)))


def test_orpo_log_odds_against_direct_odds() -> None:
    # ℓ_w = -0.5 -> p = 0.606531, odds = 1.541494 ; ℓ_l = -1.5 -> p = 0.223130, odds = 0.287217
    # log(1.541494 / 0.287217) = 1.680270 ; or_loss = -0.1·logσ(1.680270) = 0.0170859
    lo = direct_log_odds_ratio(-0.5, -1.5)
    assert math.isclose(lo, 1.6802696706417344, rel_tol=1e-12)
    or_loss, log_odds = orpo(t(-0.5), t(-1.5), beta=0.1)
    close(log_odds, lo)
    close(or_loss, 0.1 * neg_logsigmoid(lo))
    cases = [(-0.01, -0.02), (-0.69, -0.70), (-3.0, -0.2), (-20.0, -25.0)]
    _, log_odds = orpo(t(*(c[0] for c in cases)), t(*(c[1] for c in cases)), beta=0.1)
    close(log_odds, [direct_log_odds_ratio(*c) for c in cases], tol=1e-9)


def test_orpo_total_adds_chosen_nll() -> None:
    # sums -2.0 over 4 tokens -> ℓ_w = -0.5 ; -3.0 over 2 tokens -> ℓ_l = -1.5
    # loss = -ℓ_w + or_loss = 0.5 + 0.0170859 = 0.5170859
    logps = dict(policy_chosen_logps=t(-2.0), policy_rejected_logps=t(-3.0))
    out = preference_loss("orpo", **logps, **TOKENS, beta=0.1)
    close(out.loss, 0.5 + 0.1 * neg_logsigmoid(direct_log_odds_ratio(-0.5, -1.5)))
    close(out.chosen_rewards, -0.05)  # β·ℓ_w
    close(out.rejected_rewards, -0.15)


def test_log1mexp_accuracy() -> None:
    xs = [-1e-10, -1e-5, -0.1, -math.log(2.0), -0.7, -1.0, -10.0, -100.0]
    expected = [math.log(-math.expm1(x)) for x in xs]  # log(1 - e^x), computed by math
    close(log1mexp(t(*xs)), expected, tol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_orpo_stable_at_extremes(dtype: torch.dtype) -> None:
    # ℓ = 0 (p = 1: infinite odds), ℓ just below 0, and very negative ℓ (p ≈ 0).
    extremes = [0.0, -1e-30, -1e-12, -1e-7, -1e-3, -50.0, -1e4]
    lw = torch.tensor(extremes, dtype=dtype, requires_grad=True)
    ll = torch.tensor(list(reversed(extremes)), dtype=dtype, requires_grad=True)
    or_loss, log_odds = orpo(lw, ll, beta=0.1)
    assert torch.isfinite(log_odds).all() and torch.isfinite(or_loss).all()
    or_loss.sum().backward()
    assert torch.isfinite(lw.grad).all() and torch.isfinite(ll.grad).all()


def test_orpo_very_negative_log_probs() -> None:
    # ℓ_w = -50, ℓ_l = -1e-3: odds_w = e^-50/(1 - e^-50), odds_l = e^-0.001/(1 - e^-0.001)
    #   log odds ratio = -56.907255... (direct, math)
    _, log_odds = orpo(t(-50.0), t(-1e-3), beta=0.1)
    close(log_odds, direct_log_odds_ratio(-50.0, -1e-3), tol=1e-12)
    # ℓ_w = -1e4: e^ℓ_w underflows, log(1 - e^ℓ_w) = 0 exactly, so
    #   log_odds = (ℓ_w - ℓ_l) + log(1 - e^ℓ_l) = (-1e4 + 2) + log(1 - e^-2) = -9998.145413...
    hand = (-1e4 + 2.0) + math.log(1.0 - math.exp(-2.0))
    close(orpo(t(-1e4), t(-2.0), beta=0.1)[1], hand, tol=1e-12)
    # -logσ(z) = -z + log(1 + e^z) = -z for z = -9998 (e^z underflows): or_loss = 0.1·9998.145...
    close(orpo(t(-1e4), t(-2.0), beta=0.1)[0], 0.1 * -hand, tol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orpo_certain_chosen_saturates_at_dtype_eps(dtype: torch.dtype) -> None:
    # ℓ_w = 0 would make log(1 - e^ℓ_w) = -inf; it is clamped to ℓ_w = -eps, where
    # log(1 - e^-eps) = log(eps) to first order (float32: log(1.19e-7) = -15.94; float64: -36.04).
    eps = torch.finfo(dtype).eps
    # log_odds = (0 - (-1)) - (log(eps) - log(1 - e^-1))
    hand = 1.0 - (math.log(-math.expm1(-eps)) - math.log(1.0 - math.exp(-1.0)))
    _, log_odds = orpo(torch.tensor([0.0], dtype=dtype), torch.tensor([-1.0], dtype=dtype), beta=0.1)
    close(log_odds, hand, tol=1e-5 if dtype == torch.float32 else 1e-12)


# ---------------------------------------------------------------- all losses / dispatch


def all_inputs(loss_type: str, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    b = 6
    inputs = {
        "policy_chosen_logps": -torch.rand(b, generator=gen, dtype=dtype) * 40,
        "policy_rejected_logps": -torch.rand(b, generator=gen, dtype=dtype) * 40,
        "chosen_tokens": torch.randint(1, 30, (b,), generator=gen).to(dtype),
        "rejected_tokens": torch.randint(1, 30, (b,), generator=gen).to(dtype),
    }
    inputs["policy_chosen_logps"][0] = 0.0  # a certain completion, p = 1
    if loss_type not in REFERENCE_FREE:
        inputs["ref_chosen_logps"] = -torch.rand(b, generator=gen, dtype=dtype) * 40
        inputs["ref_rejected_logps"] = -torch.rand(b, generator=gen, dtype=dtype) * 40
    return inputs


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_pair_shape_finite_gradients_detached_rewards(loss_type: str, dtype: torch.dtype) -> None:
    inputs = all_inputs(loss_type, dtype)
    for name in ("policy_chosen_logps", "policy_rejected_logps"):
        inputs[name].requires_grad_()
    smoothing = 0.1 if loss_type in ("sigmoid", "robust") else 0.0
    out = preference_loss(loss_type, **inputs, beta=0.1, label_smoothing=smoothing)
    assert out.loss.shape == (6,)  # no reduction: the trainer averages
    assert out.loss.dtype == dtype
    assert torch.isfinite(out.loss).all()
    assert out.loss.requires_grad
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    assert out.chosen_rewards.grad_fn is None and out.rejected_rewards.grad_fn is None
    out.loss.mean().backward()
    for name in ("policy_chosen_logps", "policy_rejected_logps"):
        grad = inputs[name].grad
        assert grad is not None and torch.isfinite(grad).all()


def test_unknown_loss_type_names_valid_types() -> None:
    with pytest.raises(ValueError) as info:
        preference_loss("kto", **POLICY, **REF, **TOKENS, beta=BETA)
    for name in LOSS_TYPES:
        assert name in str(info.value)


@pytest.mark.parametrize("loss_type", sorted(set(LOSS_TYPES) - REFERENCE_FREE))
def test_reference_based_loss_without_ref_raises(loss_type: str) -> None:
    with pytest.raises(ValueError, match="reference"):
        preference_loss(loss_type, **POLICY, **TOKENS, beta=BETA)
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        preference_loss(loss_type, **POLICY, **TOKENS, ref_chosen_logps=t(-1.0), beta=BETA)


@pytest.mark.parametrize("loss_type", sorted(REFERENCE_FREE))
def test_reference_free_loss_ignores_ref(loss_type: str) -> None:
    with_ref = preference_loss(loss_type, **POLICY, **REF, **TOKENS, beta=BETA)
    without = preference_loss(loss_type, **POLICY, **TOKENS, beta=BETA)
    torch.testing.assert_close(with_ref.loss, without.loss)


def test_options_a_loss_does_not_use_are_errors() -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        preference_loss("hinge", **POLICY, **REF, **TOKENS, beta=BETA, label_smoothing=0.1)
    with pytest.raises(ValueError, match="margin"):
        preference_loss("ipo", **POLICY, **REF, **TOKENS, beta=BETA, margin=t(0.5))


def test_bad_beta_and_shapes_are_errors() -> None:
    with pytest.raises(ValueError, match="beta"):
        preference_loss("sigmoid", **POLICY, **REF, **TOKENS, beta=0.0)
    with pytest.raises(ValueError, match="shape"):
        preference_loss(
            "sigmoid", policy_chosen_logps=t(-1.0, -2.0), policy_rejected_logps=t(-1.0),
            **REF, **TOKENS, beta=BETA,
        )


def test_package_reexports() -> None:
    import alignkit.losses as losses

    assert losses.preference_loss is preference_loss
    assert set(losses.__all__) >= {"preference_loss", "PreferenceLossOutput", "LOSS_TYPES"}


def test_chosen_nll_is_the_per_token_negative_log_likelihood() -> None:
    from alignkit.losses.preference import chosen_nll

    out = chosen_nll(torch.tensor([-6.0, -1.5]), torch.tensor([3.0, 1.0]))
    assert torch.allclose(out, torch.tensor([2.0, 1.5]))
