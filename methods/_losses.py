"""Loss helpers shared by methods: binary focal loss and the entropy regulariser of DPL.

All functions take *logits* (fake logit z, so P(fake) = sigmoid(z)) and are written with
``softplus``/``binary_cross_entropy_with_logits`` so they stay finite for large |z|.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.engine import distributed
from benchmark.errors import UserError

LREG_STEPS = ("first", "last", "all_up_to_last")
LREG_NORMS = ("batch", "hard")


def focal_bce_with_logits(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al., ICCV 2017) without the alpha weight, mean over the batch.

    FL = -(1 - p_t)^gamma * log(p_t), p_t = P(true class). gamma = 0 is plain cross-entropy.
    """
    ce = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")  # = -log p_t
    if gamma == 0:
        return ce.mean()
    p_t = torch.exp(-ce)
    return ((1.0 - p_t).clamp_min(0.0).pow(gamma) * ce).mean()


def binary_entropy_with_logits(logits: torch.Tensor) -> torch.Tensor:
    """Elementwise H(c) = -sum_j c_j log c_j for c = (sigmoid(z), 1 - sigmoid(z)), in nats.

    Uses log sigmoid(z) = -softplus(-z) and log(1 - sigmoid(z)) = -softplus(z).
    """
    p = torch.sigmoid(logits)
    return p * F.softplus(-logits) + (1.0 - p) * F.softplus(logits)


def hard_sample_mask(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pi(x_i) of Eq. (2): 1.0 where the cross-entropy of the prediction exceeds ln 2, i.e. the
    true class gets P < 0.5 (a misclassified sample; at exactly P = 0.5 it is not hard, as in the
    authors' release, whose rule is CE > ln 2).

    Detached: the mask selects samples, it is not itself optimised.
    """
    sign = labels.to(logits.dtype).mul(2).sub(1)  # CE > ln 2  <=>  P(true) < 1/2  <=>  sign * z < 0
    return (sign * logits.detach() < 0).float()


def lreg_step_mask(last_step: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """(N, k) 0/1 mask of the step predictions L_REG applies to (Tab. 8 of the DPL paper).

    ``last_step`` (N,) int64 in 1..k is each sample's last effective step.
    first (*): step 1 only; last (dagger): the last effective step only;
    all_up_to_last (double dagger): steps 1..last effective step.
    """
    t = torch.arange(1, k + 1, device=last_step.device).unsqueeze(0)  # (1, k)
    last = last_step.unsqueeze(1)
    if mode == "first":
        sel = (t == 1).expand(last_step.shape[0], k)
    elif mode == "last":
        sel = t == last
    elif mode == "all_up_to_last":
        sel = t <= last
    else:
        raise UserError(f"methods.dpl.lreg_steps={mode!r} is unknown; choose one of: {', '.join(LREG_STEPS)}")
    return sel.float()


def entropy_regulariser(step_logits: torch.Tensor, step_mask: torch.Tensor, hard: torch.Tensor,
                        norm: str = "batch") -> torch.Tensor:
    """Eq. (2): (1/D) sum_i Pi(x_i) * mean_{t selected} H(c_it), over a batch of N samples.

    The paper sums over samples. ``norm`` chooses D: ``batch`` -- D = N, so the term's scale does
    not depend on the batch size; ``hard`` -- D = the number of hard samples (at least 1), the
    authors' release. When several steps of a sample are selected (Tab. 8 double dagger) their
    entropies are averaged, so each hard sample weighs at most ln 2 whatever the setting and
    ``lreg_weight`` means the same for all three Tab. 8 settings.
    """
    if norm not in LREG_NORMS:
        raise UserError(f"methods.dpl.lreg_norm={norm!r} is unknown; choose one of: {', '.join(LREG_NORMS)}")
    ent = binary_entropy_with_logits(step_logits)  # (N, k)
    sel = step_mask.bool()
    per_sample = torch.where(sel, ent, torch.zeros_like(ent)).sum(dim=1) / sel.sum(dim=1).clamp_min(1)
    per_sample = torch.where(hard.bool(), per_sample, torch.zeros_like(per_sample))
    if norm == "batch":  # equal shards under a launcher: the local N is this rank's share already
        return per_sample.sum() / max(step_logits.shape[0], 1)
    share = 1.0 / distributed.world_size()  # the global batch's hard samples, this rank's share
    return per_sample.sum() / distributed.global_count(hard.bool().sum()).clamp_min(share)
