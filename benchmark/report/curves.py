"""Every trained method's training curves from its ``history.csv`` (docs/CONTRACTS.md
"Training history": train_loss per epoch of every stage, and ``val_*`` columns when a
validation ran).

``training_figure(histories, labels, out_dir)``: one small panel per method: training loss per
epoch, epochs counted across stages with each stage boundary marked, the class prior's entropy
as a dotted line when given; ``val_auc`` (or the first ``val_*`` column) on a right-hand axis.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.report.figures import Figure, _pyplot, save


def training_figure(histories: dict[str, pd.DataFrame], labels: dict, out_dir: Path,
                    prior_loss: float | None = None) -> Figure | None:
    if not histories:
        return None
    plt = _pyplot()
    names = [m for m in labels if m in histories] + sorted(set(histories) - set(labels))
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 1.9 * rows), squeeze=False, sharey=True)
    for ax, m in zip(axes.flat, names):
        h = histories[m].reset_index(drop=True)
        step = np.arange(1, len(h) + 1)
        ax.plot(step, h["train_loss"], marker="o", ms=2.5, lw=1, color="C0")
        for k in np.flatnonzero(h["stage"].astype(str).to_numpy()[1:] != h["stage"].astype(str).to_numpy()[:-1]):
            ax.axvline(k + 1.5, color="0.5", lw=0.8, ls="--")
        if prior_loss is not None:
            ax.axhline(prior_loss, color="0.6", lw=0.8, ls=":")
        val = [c for c in h if c == "val_auc"] or [c for c in h if c.startswith("val_")]
        if val and h[val[0]].notna().any():
            twin = ax.twinx()
            twin.plot(step, h[val[0]], marker="s", ms=2.5, lw=1, color="C3")
            twin.set_ylim(0.4, 1.0)
            twin.tick_params(labelsize=6, colors="C3")
        ax.set_title(labels.get(m, m), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("train loss", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("epoch (all stages)", fontsize=8)
    fig.tight_layout()
    prior = "" if prior_loss is None else f" Dotted: {prior_loss:.3f}, the loss of predicting the class prior."
    caption = ("Training curves of every trained model (grid's first seed): mean training loss per epoch, "
               "epochs counted across a method's stages (dashed: a stage boundary); red, right axis: "
               "validation AUC where a validation ran." + prior)
    return save(fig, out_dir, "training_curves", caption)
