"""The preference math, checked against hand-computed values."""

import math

import pytest
import torch

from playground.objectives import (
    dpo_loss,
    hinge_loss,
    implicit_reward,
    ipo_loss,
    preference_probability,
    robust_dpo_loss,
    sequence_kl_estimate,
)


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
