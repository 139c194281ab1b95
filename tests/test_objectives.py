"""The preference math, checked against hand-computed values."""

import math

import pytest
import torch

from playground.objectives import (
    adaptive_kl_beta,
    clip_active,
    clipped_surrogate,
    clipped_value_loss,
    dpo_loss,
    gae,
    group_normalized_advantages,
    hinge_loss,
    implicit_reward,
    ipo_loss,
    k3_kl,
    kl_penalized_rewards,
    kto_loss,
    kto_reference_point,
    log_odds_ratio,
    orpo_loss,
    preference_probability,
    rloo_advantages,
    robust_dpo_loss,
    sequence_kl_estimate,
    simpo_loss,
    whiten,
)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_bradley_terry_worked_example() -> None:
    # r₁ = 2, r₂ = 1: e²/(e² + e¹) = 7.389/(7.389 + 2.718) = 0.731
    assert float(preference_probability(t(2.0), t(1.0))) == pytest.approx(0.7310586, abs=1e-6)
    assert float(preference_probability(t(1.0), t(1.0))) == 0.5


def test_implicit_reward_is_beta_times_log_ratio() -> None:
    assert float(implicit_reward(t(-10.0), t(-12.5), beta=0.1)) == pytest.approx(0.25)


def test_dpo_loss_is_negative_log_preference_probability() -> None:
    rc, rr = t(0.3, -1.0), t(0.1, 2.0)
    assert torch.allclose(dpo_loss(rc, rr), -torch.log(preference_probability(rc, rr)))
    assert float(dpo_loss(t(0.0), t(0.0))) == pytest.approx(math.log(2))


def test_robust_loss_reduces_to_dpo_and_penalises_confidence() -> None:
    rc, rr = t(1.5), t(-0.5)
    assert float(robust_dpo_loss(rc, rr, eps=0.0)) == pytest.approx(float(dpo_loss(rc, rr)))
    # ε = 0.1, Δ = 2: (−0.9·log σ(2) + 0.1·log σ(−2)) / 0.8
    expected = (-0.9 * math.log(1 / (1 + math.exp(-2))) + 0.1 * math.log(1 / (1 + math.exp(2)))) / 0.8
    assert float(robust_dpo_loss(rc, rr, eps=0.1)) == pytest.approx(expected)


def test_hinge_and_ipo() -> None:
    assert hinge_loss(t(0.2, 3.0), t(0.0, 0.0)).tolist() == pytest.approx([0.8, 0.0])
    # h = 4/2 − 2/4 = 1.5; β = 0.5 → (1.5 − 1)² = 0.25
    assert float(ipo_loss(t(4.0), t(2.0), t(2.0), t(4.0), beta=0.5)) == pytest.approx(0.25)


def test_sequence_kl_estimate_sums_masked_log_ratios() -> None:
    ratios = t(0.5, -0.25, 9.0).reshape(1, 3)
    mask = t(1, 1, 0).reshape(1, 3)
    assert float(sequence_kl_estimate(ratios, mask)[0]) == pytest.approx(0.25)


def test_reward_accuracy_counts_ties_as_half() -> None:
    from playground.objectives import reward_accuracy

    assert reward_accuracy(t(0.5, -0.1, 0.0, 0.0)) == pytest.approx(0.5)
    assert reward_accuracy(t(1.0, 2.0)) == 1.0


def test_kto_worked_example_and_reference_point() -> None:
    # β = 0.1, z₀ = 0, ρ = 2: desirable 1 − σ(0.2) = 0.450, undesirable 1 − σ(−0.2) = 0.550
    desirable = torch.tensor([True, False])
    assert kto_loss(t(2.0, 2.0), desirable, t(0.0), 0.1, 1.0, 1.0).tolist() == pytest.approx([0.4502, 0.5498],
                                                                                               abs=1e-4)
    # Weights scale each side; z₀ = 1 moves both: λ_D·(1 − σ(0.1·(2 − 1))), λ_U·(1 − σ(0.1·(1 − 2)))
    got = kto_loss(t(2.0, 2.0), desirable, t(1.0), 0.1, 2.0, 0.5).tolist()
    assert got == pytest.approx([2.0 * (1 - sigmoid(0.1)), 0.5 * (1 - sigmoid(-0.1))])
    # z₀: the mean mismatched log-ratio, never below 0, no gradient
    ratio = torch.tensor([0.3, -0.1], requires_grad=True)
    z0 = kto_reference_point(ratio)
    assert float(z0) == pytest.approx(0.1) and not z0.requires_grad
    assert float(kto_reference_point(t(-0.3, 0.1))) == 0.0


def test_simpo_paper_formula_by_hand() -> None:
    # SimPO eq. 6: −log σ(β/|y_w|·log π(y_w) − β/|y_l|·log π(y_l) − γ).
    # β = 2, γ = 1, log π(y_w) = −4 over 4 tokens, log π(y_l) = −9 over 3 tokens: −log σ(−2 + 6 − 1) = −log σ(3)
    got = simpo_loss(t(-4.0, -6.0), t(-9.0, -2.0), t(4.0, 3.0), t(3.0, 1.0), beta=2.0, gamma=1.0)
    # second pair: −log σ(2·(−2) − 2·(−2) − 1) = −log σ(−1)
    assert got.tolist() == pytest.approx([-math.log(sigmoid(3.0)), -math.log(sigmoid(-1.0))])
    assert float(got[0]) == pytest.approx(0.04859, abs=1e-5)


def test_orpo_odds_ratio_by_hand() -> None:
    # odds(y) = P/(1 − P), P = exp(mean log-prob): mean log-probs −0.5 and −1
    odds_w, odds_l = math.exp(-0.5) / (1 - math.exp(-0.5)), math.exp(-1) / (1 - math.exp(-1))
    assert float(log_odds_ratio(t(-0.5), t(-1.0))) == pytest.approx(math.log(odds_w / odds_l))
    # Stable far from 0 and next to it (log1mexp's two branches)
    assert torch.isfinite(log_odds_ratio(t(-1e-8, -80.0), t(-80.0, -1e-8))).all()
    # L = L_SFT − λ·mean log σ(log odds ratio)
    expected = 1.2 - 0.1 * math.log(sigmoid(math.log(odds_w / odds_l)))
    assert float(orpo_loss(t(1.2), t(-0.5), t(-1.0), lam=0.1)) == pytest.approx(expected)
    assert float(orpo_loss(t(1.2), t(-0.5), t(-1.0), lam=0.1)) == pytest.approx(1.2320, abs=1e-4)


def test_kl_penalized_rewards_worked_example_and_padding() -> None:
    logratio = torch.tensor([[0.5, -1.0, 0.2], [0.3, 0.4, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    rewards = kl_penalized_rewards(t(2.0, -1.0), logratio, mask, 0.1)
    # The padded third token of row 2 gets nothing; its score lands on its own last token.
    expected = [-0.05, 0.1, 1.98, -0.03, -0.04 - 1.0, 0.0]
    assert rewards.flatten().tolist() == pytest.approx(expected)
    assert rewards.sum(-1).tolist() == pytest.approx([2 - 0.1 * (0.5 - 1 + 0.2), -1 - 0.1 * 0.7])


def test_gae_worked_example_by_hand() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    values = torch.full((1, 3), 0.5, dtype=torch.float64)
    advantages, returns = gae(rewards, values, torch.ones(1, 3, dtype=torch.float64), gamma=1.0, lam=0.95)
    assert advantages[0].tolist() == pytest.approx([0.95**2 * 0.5, 0.95 * 0.5, 0.5])
    assert returns[0].tolist() == pytest.approx([0.95125, 0.975, 1.0])
    # γ = λ = 1: A_t = Σ_{s≥t} r_s − V_t (Monte Carlo return less the value), padding stays 0.
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    advantages, _ = gae(torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64), values, mask, 1.0, 1.0)
    assert advantages[0].tolist() == pytest.approx([3 - 0.5, 2 - 0.5, 0.0])


def test_whiten_and_clipping_worked_examples() -> None:
    assert whiten(t(1, 2, 3), t(1, 1, 1)).tolist() == pytest.approx([-1, 0, 1], abs=1e-6)
    assert whiten(t(1, 2, 3, 99), t(1, 1, 1, 0), shift_mean=False).tolist() == pytest.approx([1, 2, 3, 0], abs=1e-6)
    logratio = torch.log(t(1.5, 1.5, 0.5, 1.0))
    adv = t(1, -1, -1, 2)
    assert clipped_surrogate(logratio, adv, 0.2).tolist() == pytest.approx([-1.2, 1.5, 0.8, -2.0])
    assert clip_active(logratio, adv, 0.2).tolist() == [True, False, True, False]
    assert float(clipped_value_loss(t(1.0), t(0.0), t(2.0), 0.2)[0]) == pytest.approx(1.62)


def test_rloo_and_group_advantages_worked_examples() -> None:
    rewards = t(1, 2, 6)[None, :]
    assert rloo_advantages(rewards)[0].tolist() == pytest.approx([-3, -1.5, 4.5])
    assert group_normalized_advantages(rewards)[0].tolist() == pytest.approx([-0.7559, -0.3779, 1.1338], abs=1e-4)
    assert group_normalized_advantages(rewards, scale=False)[0].tolist() == pytest.approx([-2, -1, 3])
    # The leave-one-out advantages sum to zero per prompt, and equal K/(K−1)·(R − mean).
    assert float(rloo_advantages(rewards).sum()) == pytest.approx(0.0)


def test_k3_kl_and_adaptive_beta_worked_examples() -> None:
    assert float(k3_kl(t(0.5))[0]) == pytest.approx(0.1065, abs=1e-4)
    assert float(k3_kl(t(0.0))[0]) == 0.0
    assert adaptive_kl_beta(0.1, 12, 6, 16, 160) == pytest.approx(0.102)
    assert adaptive_kl_beta(0.1, 5.4, 6, 16, 160) == pytest.approx(0.1 * (1 - 0.1 * 0.1))
