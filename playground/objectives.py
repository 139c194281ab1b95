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


def kto_reference_point(mismatched_logratio: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z₀ = max(0, mean_i [log π_θ − log π_ref](y_{i−1} | x_i)): the batch's
    estimate of KL(π_θ ‖ π_ref) from mismatched pairs, each prompt with the previous row's completion
    (TRL's rotation). Detached, so no gradient flows through it (TRL 1.16's KTOTrainer).

    Example: mismatched log-ratios (0.3, −0.1) give z₀ = 0.1; (−0.3, 0.1) give z₀ = 0.
    """
    return mismatched_logratio.mean().detach().clamp(min=0)


def kto_loss(logratio: torch.Tensor, desirable: torch.Tensor, z0: torch.Tensor, beta: float,
             desirable_weight: float, undesirable_weight: float) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024, eq. 7) per completion, ρ = log π_θ(y|x) − log π_ref(y|x):
    λ_D·(1 − σ(β·(ρ − z₀))) for a desirable y, λ_U·(1 − σ(β·(z₀ − ρ))) for an undesirable one.
    `desirable` is a bool tensor (B,); the batch loss is the plain mean over all rows, as TRL.

    Example: β = 0.1, z₀ = 0, ρ = 2: desirable 1 − σ(0.2) = 0.450, undesirable 1 − σ(−0.2) = 0.550.
    """
    signed = torch.where(desirable, logratio - z0, z0 - logratio)
    weight = torch.where(desirable, desirable_weight, undesirable_weight)
    return weight * (1 - torch.sigmoid(beta * signed))


def simpo_loss(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor, n_tokens_chosen: torch.Tensor,
               n_tokens_rejected: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimPO (Meng et al. 2024, eq. 6), reference-free, per pair:
    −log σ(β/|y_w|·log π_θ(y_w|x) − β/|y_l|·log π_θ(y_l|x) − γ), γ the target margin.

    Example: β = 2, γ = 1, log π(y_w) = −4 over 4 tokens, log π(y_l) = −9 over 3 tokens:
    −log σ(2·(−1) − 2·(−3) − 1) = −log σ(3) = 0.0486.
    """
    mean_chosen = logp_chosen / n_tokens_chosen.clamp(min=1)
    mean_rejected = logp_rejected / n_tokens_rejected.clamp(min=1)
    return -F.logsigmoid(beta * (mean_chosen - mean_rejected) - gamma)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, stable on both sides of −log 2 (Mächler 2012; TRL's choice)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def log_odds_ratio(mean_logp_chosen: torch.Tensor, mean_logp_rejected: torch.Tensor) -> torch.Tensor:
    """ORPO's log odds ratio per pair: log odds(y_w) − log odds(y_l), odds(y) = P(y)/(1 − P(y)) with
    P(y) = exp of the mean per-token log-prob (TRL's experimental ORPO).

    Example: mean log-probs −0.5 and −1: log(e^−0.5/(1 − e^−0.5)) − log(e^−1/(1 − e^−1)) = 0.433 + 0.541 = 0.974.
    """
    return (mean_logp_chosen - mean_logp_rejected) - (_log1mexp(mean_logp_chosen) - _log1mexp(mean_logp_rejected))


def orpo_loss(nll_chosen: torch.Tensor, mean_logp_chosen: torch.Tensor, mean_logp_rejected: torch.Tensor,
              lam: float) -> torch.Tensor:
    """ORPO (Hong et al. 2024), reference-free, for a batch: L_SFT + λ·mean_pairs[−log σ(log odds ratio)],
    L_SFT = `nll_chosen`, the chosen sequences' negative log-likelihood per token (TRL: over the whole
    batch's prompt and chosen tokens). A scalar.

    Example: L_SFT = 1.2, λ = 0.1, one pair with log odds ratio 0.974: 1.2 + 0.1·0.320 = 1.232.
    """
    return nll_chosen - lam * F.logsigmoid(log_odds_ratio(mean_logp_chosen, mean_logp_rejected)).mean()
