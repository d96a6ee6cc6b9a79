"""RL losses against hand-computed numbers: Bradley-Terry, GAE, KL estimators, clipping, advantages."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.losses.policy import (adaptive_kl_coef, aggregate, clipped_policy_loss, group_advantages, kl_penalty,
                                    masked_mean, policy_ratio, whiten)
from alignkit.losses.reward import bradley_terry_loss, ensemble_disagreement
from alignkit.losses.value import clipped_value_loss, discount_matrix, gae

# ------------------------------------------------------------------------------------ Bradley-Terry


def test_bradley_terry_hand_computed():
    out = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    # -log sigma(1) = log(1 + e^-1); -log sigma(-2) = log(1 + e^2)
    torch.testing.assert_close(out.loss, torch.tensor([math.log1p(math.exp(-1)), math.log1p(math.exp(2))]))
    torch.testing.assert_close(out.margin, torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(out.accuracy, torch.tensor([1.0, 0.0]))


def test_bradley_terry_margin_and_centering():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    with_margin = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5, 0.0]))
    assert with_margin.loss[0].item() == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-6)  # -log sigma(1 - 0.5)
    centered = bradley_terry_loss(chosen, rejected, center_coef=0.1)
    # + 0.1 * (r_c + r_r)^2: 0.1 * 1 and 0.1 * 4
    torch.testing.assert_close(centered.loss, torch.tensor([math.log1p(math.exp(-1)) + 0.1,
                                                            math.log1p(math.exp(2)) + 0.4]))


def test_bradley_terry_is_stable_and_has_the_right_gradient():
    chosen = torch.tensor([60.0, -60.0, 0.3], requires_grad=True)
    out = bradley_terry_loss(chosen, torch.zeros(3))
    assert torch.isfinite(out.loss).all() and out.loss[0].item() < 1e-20 and out.loss[1].item() == pytest.approx(60.0)
    out.loss.sum().backward()
    # d/dr_c -log sigma(r_c - r_r) = -(1 - sigma(d)) = -sigma(-d)
    torch.testing.assert_close(chosen.grad, -torch.sigmoid(-chosen.detach()))


def test_ensemble_disagreement_is_population_std():
    torch.testing.assert_close(ensemble_disagreement(torch.tensor([[1.0, 0.0], [3.0, 0.0]])), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(ensemble_disagreement(torch.tensor([[5.0, 2.0]])), torch.zeros(2))
    with pytest.raises(ValueError):
        ensemble_disagreement(torch.ones(3))


# ---------------------------------------------------------------------------------------------- GAE


def test_discount_matrix():
    d = discount_matrix(3, 0.5)
    torch.testing.assert_close(d, torch.tensor([[1.0, 0.5, 0.25], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(discount_matrix(3, 0.0), torch.eye(3))  # lambda*gamma = 0: one-step TD


def test_gae_hand_computed_with_padding():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])  # row 2 has 2 tokens; its 9.0 is padding
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    # row 1: d2 = 1 - 0.7 = 0.3; d1 = 0.9*0.7 - 0.6 = 0.03; d0 = 0.9*0.6 - 0.5 = 0.04
    #        A2 = 0.3; A1 = 0.03 + 0.72*0.3 = 0.246; A0 = 0.04 + 0.72*0.246 = 0.21712
    # row 2: d1 = 2 - 0.5 = 1.5 (terminal); d0 = 0.9*0.5 - 1 = -0.55; A1 = 1.5; A0 = -0.55 + 0.72*1.5 = 0.53
    torch.testing.assert_close(adv, torch.tensor([[0.21712, 0.246, 0.3], [0.53, 1.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.71712, 0.846, 1.0], [1.53, 2.0, 0.0]]))


def _gae_loop(rewards, values, gamma, lam):
    """The textbook backward recursion (TRL / OpenAI baselines) for one unpadded sequence."""
    t_len = len(rewards)
    adv, last = [0.0] * t_len, 0.0
    for t in reversed(range(t_len)):
        next_v = values[t + 1] if t + 1 < t_len else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv


def test_gae_matches_the_python_loop_on_random_ragged_batches():
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 17, generator=gen), torch.randn(5, 17, generator=gen)
    lengths = [17, 1, 9, 12, 4]
    mask = (torch.arange(17)[None, :] < torch.tensor(lengths)[:, None]).float()
    adv, _ = gae(rewards, values, mask, gamma=0.99, lam=0.95)
    for i, n in enumerate(lengths):
        expected = torch.tensor(_gae_loop(rewards[i, :n].tolist(), values[i, :n].tolist(), 0.99, 0.95))
        torch.testing.assert_close(adv[i, :n], expected, atol=1e-5, rtol=1e-5)
        assert adv[i, n:].abs().sum() == 0


def test_clipped_value_loss():
    values, old, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 1.0]])
    loss, clipped = clipped_value_loss(values, old, returns, clip=0.2)
    # token 1: unclipped (1-0)^2 = 1; clipped V = 0.5 + 0.2 = 0.7 -> 0.49; max = 1 -> 0.5 * 1
    # token 2: V = old: both (0-1)^2 = 1 -> 0.5
    torch.testing.assert_close(loss, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0]]))
    loss2, clipped2 = clipped_value_loss(torch.tensor([[0.0]]), torch.tensor([[0.5]]), torch.tensor([[0.0]]), clip=0.2)
    # unclipped 0; clipped V = 0.5 - 0.2 = 0.3 -> 0.09 -> 0.5 * 0.09
    torch.testing.assert_close(loss2, torch.tensor([[0.045]]))
    assert clipped2.item() == 1.0
    plain, _ = clipped_value_loss(torch.tensor([[0.0]]), torch.tensor([[0.5]]), torch.tensor([[1.0]]), clip=None)
    assert plain.item() == pytest.approx(0.5)


# ------------------------------------------------------------------------------------ KL estimators


def test_kl_estimators_hand_computed():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    log_r = math.log(0.5)  # log(ref / pi)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(-log_r)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * log_r ** 2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx((0.5 - 1) - log_r)
    assert kl_penalty(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k4")  # type: ignore[arg-type]


def test_k1_and_k3_are_unbiased_and_k3_nonnegative():
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    exact = (p * (p / q).log()).sum()
    gen = torch.Generator().manual_seed(0)
    y = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    logp, ref = p.log()[y], q.log()[y]
    for est in ("k1", "k3"):
        assert kl_penalty(logp, ref, est).mean().item() == pytest.approx(exact.item(), abs=0.01)
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    assert (kl_penalty(logp, ref, "k1") < 0).any()  # k1 is unbiased but not pointwise positive


# ------------------------------------------------------------------------------------------ clipping


def test_clipped_policy_loss_hand_computed():
    ratio = torch.tensor([[0.5, 1.0, 1.5]], requires_grad=True)
    loss, clipped = clipped_policy_loss(ratio, torch.ones(1, 3), clip_low=0.2)
    # A = 1: max(-rho, -clip(rho)) = [-0.5, -1, -1.2]; the clip binds only above 1 + eps
    torch.testing.assert_close(loss, torch.tensor([[-0.5, -1.0, -1.2]]))
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0, 1.0]]))
    loss.sum().backward()
    torch.testing.assert_close(ratio.grad, torch.tensor([[-1.0, -1.0, 0.0]]))  # no gradient through the clip
    loss_neg, clipped_neg = clipped_policy_loss(ratio.detach(), -torch.ones(1, 3), clip_low=0.2)
    # A = -1: max(rho, clip(rho)) = [0.8, 1, 1.5]; binds only below 1 - eps
    torch.testing.assert_close(loss_neg, torch.tensor([[0.8, 1.0, 1.5]]))
    torch.testing.assert_close(clipped_neg, torch.tensor([[1.0, 0.0, 0.0]]))


def test_clip_higher_widens_only_the_upper_side():
    ratio = torch.tensor([[1.25, 0.75]])
    loss, clipped = clipped_policy_loss(ratio, torch.ones(1, 2), clip_low=0.2, clip_high=0.28)
    torch.testing.assert_close(loss, torch.tensor([[-1.25, -0.75]]))
    assert clipped.sum() == 0
    loss_neg, _ = clipped_policy_loss(ratio, -torch.ones(1, 2), clip_low=0.2, clip_high=0.28)
    torch.testing.assert_close(loss_neg, torch.tensor([[1.25, 0.8]]))


def test_sequence_level_ratio_is_the_geometric_mean_with_token_gradients():
    logp = torch.tensor([[-1.0, -2.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    seq = policy_ratio(logp, old, mask, "sequence")
    torch.testing.assert_close(seq.detach(), torch.ones(1, 3))  # exp(mean(0.5, -0.5)) = 1 on every token
    (seq * mask).sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[1.0, 1.0, 0.0]]))  # s_i * d logp_t
    tok = policy_ratio(logp.detach(), old, mask, "token")
    torch.testing.assert_close(tok, torch.tensor([[math.exp(0.5), math.exp(-0.5), 1.0]]))


# -------------------------------------------------------------------------------------- advantages


def test_group_advantages_mean_std_and_rloo():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    grpo = group_advantages(rewards)
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    torch.testing.assert_close(grpo[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    torch.testing.assert_close(grpo[1], torch.zeros(4))  # equal rewards: no signal, no NaN
    rloo = group_advantages(rewards, baseline="rloo", scale="none")
    # r_i - mean of the other three: 1 - 1/3, 0 - 2/3
    torch.testing.assert_close(rloo[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    dr = group_advantages(rewards, scale="none")
    torch.testing.assert_close(dr[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    batch = group_advantages(rewards, scale="batch")
    torch.testing.assert_close(batch[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (rewards.std() + 1e-4))
    with pytest.raises(ValueError):
        group_advantages(torch.ones(2, 1), baseline="rloo")


def test_whiten_over_masked_tokens():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(whiten(x, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(whiten(x, mask, shift_mean=False), torch.tensor([[1.0, 2.0, 3.0, 0.0]]), atol=1e-6, rtol=0)
    assert masked_mean(x, mask).item() == pytest.approx(2.0)


def test_adaptive_kl_controller():
    up = adaptive_kl_coef(0.1, 0.12, target=0.1, horizon=10_000, n_steps=256)
    assert up == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))  # error clipped to +0.2
    down = adaptive_kl_coef(0.1, 0.05, target=0.1, horizon=10_000, n_steps=256)
    assert down == pytest.approx(0.1 * (1 - 0.2 * 256 / 10_000))
    assert adaptive_kl_coef(0.1, 0.1, target=0.1, horizon=10, n_steps=5) == pytest.approx(0.1)


def test_aggregation_modes_and_split_equivalence():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate(loss, mask, "token", tokens=4, sequences=2).item() == pytest.approx(2.5)
    assert aggregate(loss, mask, "sequence", tokens=4, sequences=2).item() == pytest.approx(3.0)
    assert aggregate(loss, mask, "fixed", tokens=4, sequences=2, max_tokens=3).item() == pytest.approx(10 / 6)
    for mode in ("token", "sequence", "fixed"):  # micro-batches with the step's denominators sum to the whole
        whole = aggregate(loss, mask, mode, tokens=4, sequences=2, max_tokens=3)
        parts = sum(aggregate(loss[i : i + 1], mask[i : i + 1], mode, tokens=4, sequences=2, max_tokens=3)
                    for i in range(2))
        assert parts.item() == pytest.approx(whole.item())
