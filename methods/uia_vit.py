"""UIA-ViT: unsupervised inconsistency-aware vision transformer.

Paper: W. Zhuang, Q. Chu, Z. Tan, Q. Liu, H. Yuan, C. Miao, Z. Luo, N. Yu, "UIA-ViT:
Unsupervised Inconsistency-Aware Method based on Vision Transformer for Face Forgery
Detection", ECCV 2022.

Mechanism kept: a ViT. Unsupervised patch consistency learning (UPCL): a multivariate Gaussian
of *real* faces' patch features (at ``feature_layer``) is estimated during training (running
mean and covariance); each patch of a fake face is scored by its Mahalanobis distance to it,
and the patches far from it (min-max normalised distance > ``mask_threshold``) are
pseudo-labelled forged; patches with the same pseudo label must be consistent: a
patch-consistency loss makes each patch attend to patches of its own label in the attention
maps of ``attention_layers``. Progressive consistency-weighted assembly (PCWA): the
classifier reads the class token together with the final patch tokens averaged with weights
from the class token's attention over those layers. Loss: BCE + ``lambda_pcl`` * L_pcl.

Default backbone: ViT-B/16 (``vit_base_patch16_224``) at 224 px. params.yaml uses
``vit_tiny_patch16_224`` (same family) at 64 px with 8-px patches and 6 blocks so the grid
fits a CPU.

Deviations and readings:
- L_pcl (a reading): with A the patch-to-patch attention averaged over heads and
  ``attention_layers`` and renormalised over patches, L_pcl = -mean_i log(sum_j C_ij A_ij),
  C_ij = 1 when patches i and j share a pseudo label; averaged over the fake faces whose
  pseudo mask has both labels (real faces have one label only and give 0);
- the Gaussian is an exponential moving average (``gauss_momentum``) of per-batch real patch
  statistics (the first batch with reals sets it), with ``gauss_eps`` * I added to the
  covariance; layer indices are 1-based block numbers; defaults of ``feature_layer``,
  ``attention_layers``, ``mask_threshold`` and ``lambda_pcl`` are readings of the paper;
- inputs of another size than ``img_size`` are accepted (timm's ``dynamic_img_size``:
  bicubic interpolation of the position embedding);
- PCWA weights: mean over heads and ``attention_layers`` of the class token's attention to
  each patch, renormalised;
- single fake logit with binary cross-entropy; random initialisation unless ``pretrained``
  is a local file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from benchmark.backbones import backbone_weights, create_backbone


def attention_weights(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention (N, heads, T, T) of a timm ``Attention`` on its (normalised) input x."""
    n, t, _ = x.shape
    q, k, _ = attn.qkv(x).reshape(n, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return torch.softmax((q * attn.scale) @ k.transpose(-2, -1), dim=-1)


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """sqrt((x - mean)^T cov^-1 (x - mean)) for each row of x (..., D)."""
    diff = (x - mean).reshape(-1, x.shape[-1])
    sol = torch.linalg.solve(cov, diff.T).T
    return (diff * sol).sum(-1).clamp_min(0).sqrt().reshape(x.shape[:-1])


def pseudo_masks(dist: torch.Tensor, label: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, L) 1 = forged patch: fakes' patches whose min-max normalised distance exceeds
    ``threshold``; every patch of a real face is 0."""
    lo, hi = dist.min(1, keepdim=True).values, dist.max(1, keepdim=True).values
    norm = (dist - lo) / (hi - lo).clamp_min(1e-12)
    return ((norm > threshold) & (label != 0).unsqueeze(1)).to(dist.dtype)


def consistency_loss(attn: torch.Tensor, masks: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """-mean_i log(sum_j C_ij A_ij) over the images whose mask has both labels (else 0).

    ``attn`` (N, L, L) patch-to-patch attention, rows renormalised here; ``masks`` (N, L) in {0,1}.
    """
    a = attn / attn.sum(-1, keepdim=True).clamp_min(eps)
    same = (masks.unsqueeze(2) == masks.unsqueeze(1)).to(a.dtype)
    per_patch = -torch.log((a * same).sum(-1).clamp_min(eps))
    mixed = (masks.amax(1) > 0) & (masks.amin(1) < 1)
    return per_patch[mixed].mean() if mixed.any() else attn.new_zeros(())


@METHODS.register_module(name="uia_vit")
class UIAViT(Method):
    # ViT-B/16 at 224 px, 12 blocks, 16-px patches (cost table)
    paper_setting = {"backbone": "vit_base_patch16_224", "img_size": 224, "patch_size": 16, "depth": 12,
                     "feature_layer": 6, "attention_layers": [6, 7, 8]}
    paper_input_size = 224

    def __init__(self, backbone: str = "vit_base_patch16_224", pretrained: str | None = None,
                 img_size: int = 224, patch_size: int | None = None, depth: int | None = None,
                 feature_layer: int = 6, attention_layers=(6, 7, 8), mask_threshold: float = 0.5,
                 lambda_pcl: float = 1.0, gauss_momentum: float = 0.99, gauss_eps: float = 0.01):
        super().__init__()
        extra = {k: v for k, v in {"patch_size": patch_size, "depth": depth}.items() if v is not None}
        self.backbone_name = backbone
        # dynamic_img_size: other input sizes interpolate the position embedding (timm)
        self.vit = create_backbone(backbone, pretrained, img_size=img_size, num_classes=0, dynamic_img_size=True, **extra)
        self.weights = backbone_weights(self.vit)
        n_blocks = len(self.vit.blocks)
        layers = [feature_layer, *attention_layers]
        if not attention_layers or any(not 1 <= int(i) <= n_blocks for i in layers):
            raise UserError(f"uia_vit layers {layers} must be block numbers in 1..{n_blocks} of {backbone}")
        self.feature_layer, self.attention_layers = int(feature_layer), tuple(int(i) for i in attention_layers)
        self.mask_threshold, self.lambda_pcl = float(mask_threshold), float(lambda_pcl)
        self.gauss_momentum, self.gauss_eps = float(gauss_momentum), float(gauss_eps)
        dim, self.n_prefix = self.vit.embed_dim, self.vit.num_prefix_tokens
        self.register_buffer("gauss_mean", torch.zeros(dim))
        self.register_buffer("gauss_cov", torch.eye(dim))
        self.register_buffer("gauss_seen", torch.zeros((), dtype=torch.bool))
        self.head = nn.Linear(2 * dim, 1)

    @torch.no_grad()
    def update_gaussian(self, patches: torch.Tensor) -> None:
        """Running mean/covariance of real patch features (rows of ``patches``, (M, D))."""
        if len(patches) < 2:
            return
        mean, cov = patches.mean(0), torch.cov(patches.T)
        m = self.gauss_momentum if bool(self.gauss_seen) else 0.0
        self.gauss_mean.mul_(m).add_(mean, alpha=1 - m)
        self.gauss_cov.mul_(m).add_(cov, alpha=1 - m)
        self.gauss_seen.fill_(True)

    def forward(self, batch: dict) -> dict:
        x = self.vit.norm_pre(self.vit.patch_drop(self.vit._pos_embed(self.vit.patch_embed(self.normalize(batch["image"])))))
        p = self.n_prefix
        maps, feat = [], None
        for i, blk in enumerate(self.vit.blocks, start=1):
            if i in self.attention_layers:
                maps.append(attention_weights(blk.attn, blk.norm1(x)).mean(1))  # (N, T, T), heads averaged
            x = blk(x)
            if i == self.feature_layer:
                feat = x[:, p:]
        x = self.vit.norm(x)
        attn = torch.stack(maps).mean(0)
        w = attn[:, 0, p:]
        # clamped: when the class token attends (almost) only to itself the patch weights underflow,
        # and an unclamped division turned the 10-epoch default grid's weights into NaN
        w = w / w.sum(1, keepdim=True).clamp_min(1e-6)
        assembled = (w.unsqueeze(2) * x[:, p:]).sum(1)  # PCWA
        logit = self.head(torch.cat([x[:, 0], assembled], 1)).squeeze(1)
        return {"logit": logit, "patch_attention": attn[:, p:, p:], "patch_features": feat}

    def loss(self, out: dict, batch: dict) -> dict:
        label = batch["label"]
        bce = F.binary_cross_entropy_with_logits(out["logit"], label.float())
        feat = out["patch_features"].detach()
        if self.training:
            self.update_gaussian(feat[label == 0].reshape(-1, feat.shape[-1]))
        if not bool(self.gauss_seen):
            pcl = bce.new_zeros(())
        else:
            cov = self.gauss_cov + self.gauss_eps * torch.eye(len(self.gauss_cov), device=feat.device)
            masks = pseudo_masks(mahalanobis(feat, self.gauss_mean, cov), label, self.mask_threshold)
            pcl = consistency_loss(out["patch_attention"], masks)
        return {"loss": bce + self.lambda_pcl * pcl, "bce": bce, "pcl": pcl}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
