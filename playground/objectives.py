"""The preference math, each formula once. Every number the product shows comes from here.

Notation: x a prompt, y a completion, log π(y|x) = Σ_t log π(y_t | x, y_<t) summed over the
completion's tokens only, β > 0 the KL strength. Tensors are per row: shape (B,) unless noted.
"""

import torch
import torch.nn.functional as F


def implicit_reward(logp_policy: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward r(x, y) = β · (log π_θ(y|x) − log π_ref(y|x))."""
    return beta * (logp_policy - logp_ref)


def preference_probability(reward_1: torch.Tensor, reward_2: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry: p(y₁ ≻ y₂ | x) = exp(r₁) / (exp(r₁) + exp(r₂)) = σ(r₁ − r₂).

    Example: r₁ = 2, r₂ = 1 gives 7.39 / (7.39 + 2.72) = 0.73.
    """
    return torch.sigmoid(reward_1 - reward_2)


def dpo_loss(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor) -> torch.Tensor:
    """DPO (sigmoid) loss per pair: −log σ(r(x, y_w) − r(x, y_l)) = −log p(y_w ≻ y_l).

    The same form, with a scalar reward model r_ϑ in place of the implicit reward, is the
    reward-model loss ℓ_RM = −log σ(r_ϑ(x, y⁺) − r_ϑ(x, y⁻)) of RLHF's first step.
    """
    return -F.logsigmoid(reward_chosen - reward_rejected)


def robust_dpo_loss(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor, eps: float) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024) for labels flipped with probability ε ∈ [0, 0.5):
    [−(1−ε)·log σ(Δ) + ε·log σ(−Δ)] / (1 − 2ε), Δ = r_w − r_l. ε = 0 is plain DPO. (TRL's "robust".)"""
    margin = reward_chosen - reward_rejected
    return (-(1 - eps) * F.logsigmoid(margin) + eps * F.logsigmoid(-margin)) / (1 - 2 * eps)


def hinge_loss(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor) -> torch.Tensor:
    """SLiC-style hinge: max(0, 1 − (r_w − r_l)), with r = β·log-ratio as everywhere here (TRL's "hinge")."""
    return torch.relu(1 - (reward_chosen - reward_rejected))


def ipo_loss(
    logratio_chosen: torch.Tensor,
    logratio_rejected: torch.Tensor,
    n_tokens_chosen: torch.Tensor,
    n_tokens_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """IPO (Azar et al. 2023): (h − 1/(2β))², h = the difference of the per-token mean log-ratios
    log(π/π_ref)(y_w)/|y_w| − log(π/π_ref)(y_l)/|y_l|. The length normalisation follows TRL."""
    h = logratio_chosen / n_tokens_chosen.clamp(min=1) - logratio_rejected / n_tokens_rejected.clamp(min=1)
    return (h - 1 / (2 * beta)) ** 2


def sequence_kl_estimate(per_token_logratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Single-sample estimate of KL(π_θ ‖ π_ref)(x): Σ_t [log π_θ − log π_ref](y_t) for y ~ π_θ(·|x).

    Unbiased only when y was sampled from the policy π_θ at temperature 1 without top-k/top-p;
    for any other y it is just the sequence log-ratio. Shapes: (B, T) → (B,).
    """
    return (per_token_logratio * mask).sum(dim=-1)


def reward_accuracy(margins: torch.Tensor) -> float:
    """Implicit-reward accuracy: mean over pairs of 1[r_w > r_l] + ½·1[r_w = r_l], so chance (and a
    fresh adapter, where every margin is 0) is 0.5. TRL counts ties as wrong and shows 0 there."""
    return float(((margins > 0).float() + 0.5 * (margins == 0).float()).mean())
