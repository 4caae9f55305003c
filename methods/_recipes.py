"""Training recipes several baselines share (``Method.recipe``; ``benchmark.engine.optim``).

DeepfakeBench (SCLBD/DeepfakeBench, ``training/config/detector/<name>.yaml``; facts read, nothing
copied) trains F3Net, SRM, SPSL, SIA and UCF with the same Adam: lr 2e-4, betas (0.9, 0.999),
eps 1e-8, weight decay 5e-4, no learning-rate schedule. Their batch sizes and epochs differ and
stay in each method's own ``recipe``.
"""
from __future__ import annotations

DEEPFAKEBENCH_ADAM = {"type": "Adam", "lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 5e-4}


def deepfakebench(batch_size: int, epochs: int) -> dict:
    """DeepfakeBench's shared Adam at ``batch_size`` for ``epochs``, constant lr."""
    return {"optimizer": dict(DEEPFAKEBENCH_ADAM), "param_scheduler": [], "batch_size": int(batch_size),
            "epochs": int(epochs)}
