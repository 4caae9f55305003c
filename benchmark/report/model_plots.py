"""Figures that need trained models: a t-SNE of fused features and Grad-CAM maps.

``tsne_figure(models, batch, labels, out_dir, seed)``: scikit-learn t-SNE (PCA init, seeded) of
``Method.features(batch)`` per method, one panel per method, points coloured by manipulation
(real, DF, F2F, FS, NT). Methods whose ``features`` is None are left out.

``gradcam_figure(models, batch, labels, out_dir)``: Grad-CAM of the fake logit at each method's
``cam_layer()`` (methods returning None are left out), one row per method, one column per
manipulation (one seeded test frame each), the input frames on the first row. Grad-CAM comes
from ``pytorch-grad-cam`` (``grad-cam`` on PyPI, MIT), which needs only opencv-python-headless
and installs next to torch 2.13.0 (pinned in pyproject.toml); the method is wrapped as a
module taking the image tensor (the batch's other keys, e.g. indicator levels, fixed).

``models`` is an ordered {label: Method}; ``batch`` the method input dict (image float [0, 1]
plus what ``requires`` asks for). Both figures go through ``figures.save`` (PNG + SVG +
caption, deterministic bytes).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark.report.figures import Figure, _pyplot, save

CLASS_ORDER = ["real", "DF", "F2F", "FS", "NT"]


@torch.no_grad()
def _features(model, batch: dict, chunk: int = 64) -> np.ndarray | None:
    model.eval()
    n = batch["image"].shape[0]
    parts = []
    for i in range(0, n, chunk):
        f = model.features({k: v[i:i + chunk] for k, v in batch.items()})
        if f is None:
            return None
        parts.append(f.flatten(1).double().cpu().numpy())
    return np.concatenate(parts)


def tsne_embedding(features: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    perplexity = float(max(2, min(30, (len(features) - 1) // 3)))
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity,
                max_iter=500).fit_transform(features)


def tsne_figure(models: dict, batch: dict, labels: list[str], out_dir, seed: int,
                note: str = "") -> Figure | None:
    from tqdm import tqdm
    feats = {}
    for name, model in tqdm(models.items(), desc="t-SNE", unit="method", leave=False):
        f = _features(model, batch)
        if f is not None:
            feats[name] = tsne_embedding(f, seed)
    if not feats:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(feats), figsize=(3.2 * len(feats), 3.0), squeeze=False)
    labels = np.asarray(labels)
    classes = [c for c in CLASS_ORDER if c in set(labels)] + sorted(set(labels) - set(CLASS_ORDER))
    for ax, (name, xy) in zip(axes[0], feats.items()):
        for i, c in enumerate(classes):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color="k" if c == "real" else f"C{i}",
                       label=c, alpha=.75, linewidths=0)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7, frameon=False, markerscale=2)
    fig.tight_layout()
    caption = (f"t-SNE (scikit-learn, PCA init, seed {seed}) of the feature each method's head "
               f"reads, {len(labels)} test frames coloured by manipulation{note}.")
    return save(fig, out_dir, "tsne", caption)


class _ImageInput(nn.Module):
    """A method as a module of the image tensor alone, returning (N, 1) fake logits."""

    def __init__(self, method, extra: dict):
        super().__init__()
        self.method, self.extra = method, extra

    def forward(self, image):
        return self.method({"image": image, **self.extra})["logit"].unsqueeze(1)


def grad_cam(model, batch: dict) -> np.ndarray | None:
    """(N, H, W) Grad-CAM maps in [0, 1] of the fake logit, or None without a cam_layer."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    layer = model.cam_layer()
    if layer is None:
        return None
    model.eval()
    extra = {k: v for k, v in batch.items() if k != "image"}
    with GradCAM(model=_ImageInput(model, extra), target_layers=[layer]) as cam:
        n = batch["image"].shape[0]
        return cam(input_tensor=batch["image"].clone(), targets=[ClassifierOutputTarget(0)] * n)


def gradcam_figure(models: dict, batch: dict, labels: list[str], out_dir,
                   note: str = "") -> Figure | None:
    from tqdm import tqdm
    maps = {}
    for name, model in tqdm(models.items(), desc="Grad-CAM", unit="method", leave=False):
        m = grad_cam(model, batch)
        if m is not None:
            maps[name] = m
    if not maps:
        return None
    plt = _pyplot()
    images = batch["image"].permute(0, 2, 3, 1).cpu().numpy()
    cols = len(labels)
    fig, axes = plt.subplots(1 + len(maps), cols, figsize=(1.6 * cols, 1.7 * (1 + len(maps))),
                             squeeze=False)
    for j, lab in enumerate(labels):
        axes[0][j].imshow(images[j])
        axes[0][j].set_title(lab)
        for i, (name, m) in enumerate(maps.items(), start=1):
            axes[i][j].imshow(images[j])
            axes[i][j].imshow(m[j], cmap="jet", alpha=.45, vmin=0, vmax=1)
            if j == 0:
                axes[i][j].set_ylabel(name)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set_ylabel("input")
    fig.tight_layout()
    caption = ("Grad-CAM (pytorch-grad-cam) of the fake logit at each method's last backbone "
               f"stage, one test frame per manipulation (paper Fig. 9){note}.")
    return save(fig, out_dir, "gradcam", caption)


def load_batch(rows, faces_dir, indicator, device="cpu") -> dict:
    """The method input of manifest ``rows`` on ``device``: images in [0, 1] and their indicator
    levels (computed on the very images scored, as at evaluation)."""
    from benchmark.data.frames import crops_tensor
    images = crops_tensor(faces_dir, rows).to(device)
    vqi, fii = indicator.levels_from_scores(indicator.score(images))
    return {"image": images.float() / 255, "vqi_level": vqi.to(device), "fii_level": fii.to(device)}


def make(models: dict, manifest, faces_dir, indicator, cfg: dict, out_dir, device="cpu") -> list[Figure]:
    """Both figures on seeded samples of ``manifest`` (a test split), the models run on
    ``device``: ``cfg`` is params.yaml ``plots`` (``seed``, ``tsne_frames``, ``quality``)."""
    from pathlib import Path
    faces_dir = Path(faces_dir)
    models = {name: m.to(device) for name, m in models.items()}
    rng = np.random.default_rng(int(cfg["seed"]))
    rows = manifest.reset_index(drop=True)
    pick = np.sort(rng.choice(len(rows), size=min(int(cfg["tsne_frames"]), len(rows)), replace=False))
    sample = rows.iloc[pick]
    note = f" ({cfg['quality']} test split)"
    out = [tsne_figure(models, load_batch(sample, faces_dir, indicator, device),
                       sample["manipulation"].astype(str).tolist(), out_dir, int(cfg["seed"]), note)]
    per = [g.iloc[[int(rng.integers(len(g)))]] for _, g in
           sorted(rows.groupby("manipulation"), key=lambda kv: (CLASS_ORDER + [kv[0]]).index(kv[0]))]
    cam_rows = pd.concat(per)
    out.append(gradcam_figure(models, load_batch(cam_rows, faces_dir, indicator, device),
                              cam_rows["manipulation"].astype(str).tolist(), out_dir, note))
    return [f for f in out if f is not None]
