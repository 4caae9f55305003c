"""Stage II of DPL: the PPO terms of Eq. (4)-(6) as functions of tensors.

Time indexing: the action l_t (t = 1..k-1) is taken in state f_t and produces f_{t+1}, whose
step prediction gives c_{t+1}; so l_t earns r_{t+1} = c_{t+1} - c_t. All tensors below are
(N, k-1), column t-1 holding the quantity of action l_t; ``mask`` is 1 where f_{t+1} is used by
the sample (t + 1 <= its last effective step), and every mean is over masked entries (E_t).
"""
from __future__ import annotations

import math

import torch

from benchmark.engine import distributed
from benchmark.errors import UserError

RETURNS = ("total", "to_go")
CLIP_FORMS = ("schulman", "printed")


def true_class_prob(step_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """c_t (N, k): the step prediction's probability of the ground-truth class."""
    sign = label.to(step_logits.dtype).mul(2).sub(1).unsqueeze(1)  # +1 fake, -1 real
    return torch.sigmoid(sign * step_logits)


def step_rewards(step_logits: torch.Tensor, label: torch.Tensor, step_valid: torch.Tensor) -> torch.Tensor:
    """r (N, k-1): r_{t+1} = c_{t+1} - c_t for action l_t; 0 where step t+1 is past the sample's last."""
    c = true_class_prob(step_logits, label)
    return (c[:, 1:] - c[:, :-1]) * step_valid[:, 1:].to(c.dtype)


def returns(rewards: torch.Tensor, mode: str = "total", gamma: float = 1.0, normalize: bool = False,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """R_t (N, k-1). ``total`` (the paper: "the sum of rewards at all steps"): every step gets
    sum_s r_s; ``to_go``: the discounted reward-to-go R_t = sum_{s >= t} gamma^(s-t) r_s (the
    release: gamma 0.7). ``normalize``: standardise R over the ``mask``ed entries of the whole
    batch x steps, (R - mean) / (std + 1e-8), population std (the release); 0 off the mask."""
    if mode == "total":
        ret = rewards.sum(1, keepdim=True).expand_as(rewards)
    elif mode == "to_go":
        acc, out = torch.zeros_like(rewards[:, 0]), []
        for t in range(rewards.shape[1] - 1, -1, -1):
            acc = rewards[:, t] + float(gamma) * acc
            out.append(acc)
        ret = torch.stack(out[::-1], 1) if out else rewards.clone()
    else:
        raise UserError(f"methods.dpl.ppo_return={mode!r} is unknown; choose one of: {', '.join(RETURNS)}")
    if not normalize:
        return ret
    m = torch.ones_like(ret) if mask is None else mask.to(ret.dtype)
    count = distributed.global_sum(m.sum()).clamp_min(1.0)  # over the global batch under a launcher
    mean = distributed.global_sum((ret * m).sum()) / count
    std = (distributed.global_sum(((ret - mean) ** 2 * m).sum()) / count).sqrt()
    return (ret - mean) / (std + 1e-8) * m


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over the masked entries of the global batch (data-parallel: this rank's share)."""
    mask = mask.to(x.dtype)
    share = 1.0 / distributed.world_size()
    return (x * mask).sum() / distributed.global_count(mask.sum()).clamp_min(share)


def clipped_surrogate(log_prob, old_log_prob, advantage, mask, eps: float = 0.2, form: str = "schulman"):
    """Eq. (4), L_REW = -E_t[...] with ratio = p_Phi(l_t|f_t) / p_Phi'(l_t|f_t).

    ``schulman`` (PPO as cited, [35]): min(ratio * A, clip(ratio, 1-eps, 1+eps) * A).
    ``printed``: min(ratio, clip(ratio, 1-eps, 1+eps)) * A, the formula as typeset; it equals
    the former for A >= 0 but for A < 0 it leaves a ratio below 1-eps unclipped.
    """
    if form not in CLIP_FORMS:
        raise UserError(f"methods.dpl.ppo_clip_form={form!r} is unknown; choose one of: {', '.join(CLIP_FORMS)}")
    ratio = torch.exp(log_prob - old_log_prob)
    clipped = ratio.clamp(1.0 - eps, 1.0 + eps)
    adv = advantage.detach()
    obj = torch.minimum(ratio * adv, clipped * adv) if form == "schulman" else torch.minimum(ratio, clipped) * adv
    return -_masked_mean(obj, mask)


def value_loss(value: torch.Tensor, ret: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. (5): L_SE = E_t (V(f_t) - R_t)^2 (``value_weight`` 0.5 gives the release's 0.5 * MSE)."""
    return _masked_mean((value - ret.detach()) ** 2, mask)


def gaussian_entropy(sigma: torch.Tensor) -> torch.Tensor:
    """Entropy of N(mu, sigma) in nats: 0.5 * ln(2 pi e sigma^2)."""
    return 0.5 * torch.log(2 * math.pi * math.e * sigma ** 2)


def ppo_objective(log_prob, old_log_prob, entropy, value, ret, mask, eps: float, form: str,
                  value_weight: float = 1.0, entropy_weight: float = 1.0) -> dict:
    """Eq. (6): L_2 = L_REW + value_weight * L_SE - entropy_weight * L_EN, A_t = R_t - V(f_t)."""
    advantage = ret - value.detach()
    rew = clipped_surrogate(log_prob, old_log_prob, advantage, mask, eps, form)
    se = value_loss(value, ret, mask)
    en = _masked_mean(entropy, mask)
    return {"loss": rew + value_weight * se - entropy_weight * en, "l_rew": rew, "l_se": se, "l_en": en}
