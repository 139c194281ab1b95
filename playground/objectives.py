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


# RLHF (`playground.training.rlhf`): per-token tensors are (B, T), right-padded, `mask` 1.0 on completion tokens.


def kl_penalized_rewards(scores: torch.Tensor, logratio: torch.Tensor, mask: torch.Tensor, beta: float
                         ) -> torch.Tensor:
    """The RLHF objective's per-token reward (Ziegler et al. 2019; Stiennon et al. 2020):
    r_t = −β·(log π_θ − log π_ref)(y_t) at every completion token, plus the reward model's score
    r_φ(x, y) at the last one. Σ_t r_t = r_φ(x, y) − β·Σ_t log π_θ/π_ref(y_t) is the sequence reward,
    whose mean over y ~ π_θ is E[r_φ] − β·KL(π_θ ‖ π_ref). Shapes: scores (B,), the rest (B, T) → (B, T).

    Example: β = 0.1, score 2, log-ratios (0.5, −1, 0.2) → r = (−0.05, 0.1, −0.02 + 2) = (−0.05, 0.1, 1.98).
    """
    rewards = -beta * logratio * mask
    last = (mask.sum(dim=-1).long() - 1).clamp(min=0)  # (B,) right padding: the last completion token
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) per token, (advantages, returns):
    δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1}, V and A zero after the last token;
    returns R_t = A_t + V_t (the value head's target). Shapes (B, T) → (B, T), (B, T).

    Example: r = (0, 0, 1), V = (0.5, 0.5, 0.5), γ = 1, λ = 0.95: δ = (0, 0, 0.5),
    A = (0.95²·0.5, 0.95·0.5, 0.5) = (0.45125, 0.475, 0.5), R = (0.95125, 0.975, 1).
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean)/√(var + 1e-8) over the masked entries, var the unbiased variance (TRL's `masked_whiten`);
    with `shift_mean` False the mean is added back (scale only). Masked-out entries come out 0.

    Example: x = (1, 2, 3), mask all 1: mean 2, var 1 → (−1, 0, 1).
    """
    n = mask.sum()
    mean = (values * mask).sum() / n
    var = (((values - mean) * mask) ** 2).sum() / (n - 1).clamp(min=1)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def clipped_surrogate(logratio: torch.Tensor, advantages: torch.Tensor, eps: float) -> torch.Tensor:
    """PPO's clipped surrogate loss per term (Schulman et al. 2017), ρ = exp(log π_θ − log π_old):
    −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A). Per token (PPO, GRPO) or per sequence (RLOO, as TRL), any shape.

    Example: ε = 0.2, A = 1: ρ = 1.5 → −1.2 (clipped); A = −1, ρ = 1.5 → 1.5 (not clipped, min picks ρ·A).
    """
    ratio = torch.exp(logratio)
    return -torch.min(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)


def clip_active(logratio: torch.Tensor, advantages: torch.Tensor, eps: float) -> torch.Tensor:
    """Where the clip of `clipped_surrogate` binds (no gradient flows there): ρ < 1 − ε with A < 0, or
    ρ > 1 + ε with A > 0 (TRL's `clip_ratio/region`). A bool tensor of the inputs' shape.

    Example: ε = 0.2: (ρ = 1.5, A = 1) binds, (ρ = 1.5, A = −1) does not.
    """
    ratio = torch.exp(logratio)
    return ((ratio < 1 - eps) & (advantages < 0)) | ((ratio > 1 + eps) & (advantages > 0))


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, eps: float
                       ) -> torch.Tensor:
    """PPO's clipped value loss per token: ½·max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²).

    Example: V_old = 0, V = 1, R = 2, ε = 0.2: ½·max(1, 3.24) = 1.62.
    """
    clipped = old_values + (values - old_values).clamp(-eps, eps)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024) over K ≥ 2 samples of each
    prompt: A_i = R_i − (1/(K−1))·Σ_{j≠i} R_j. Shape (P, K) → (P, K).

    Example: R = (1, 2, 6): baselines (4, 3.5, 1.5) → A = (−3, −1.5, 4.5).
    """
    k = rewards.shape[-1]
    return rewards - (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)


def group_normalized_advantages(rewards: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """GRPO (Shao et al. 2024) over K ≥ 2 samples of each prompt: A_i = (R_i − mean_j R_j)/(std_j R_j + 1e-4),
    std the unbiased standard deviation (TRL's `scale_rewards="group"`); `scale` False: R_i − mean
    (Dr. GRPO). Shape (P, K) → (P, K).

    Example: R = (1, 2, 6): mean 3, std 2.6458 → A = (−0.7559, −0.3779, 1.1338).
    """
    centred = rewards - rewards.mean(dim=-1, keepdim=True)
    return centred / (rewards.std(dim=-1, keepdim=True) + 1e-4) if scale else centred


def k3_kl(logratio: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ ‖ π_ref) per token, for y_t ~ π_θ: e^{−d} + d − 1 ≥ 0 with
    d = log π_θ − log π_ref (what TRL's GRPO adds to its loss when β > 0).

    Example: d = 0.5: e^{−0.5} + 0.5 − 1 = 0.1065.
    """
    return torch.exp(-logratio) + logratio - 1


def adaptive_kl_beta(beta: float, kl: float, target: float, n: int, horizon: int) -> float:
    """Ziegler et al. (2019)'s adaptive KL controller: β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon),
    n the samples in the step, KL the step's mean sequence KL estimate.

    Example: β = 0.1, KL = 12, target 6, n = 16, horizon 160: β·(1 + 0.2·0.1) = 0.102.
    """
    error = min(max(kl / target - 1, -0.2), 0.2)
    return beta * (1 + error * n / horizon)
