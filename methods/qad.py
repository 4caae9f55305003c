"""QAD: quality-agnostic detection with HSIC kernel regularisation and adversarial weight perturbation.

Paper: B. M. Le and S. S. Woo, "Quality-Agnostic Deepfake Detection with Intra-model
Collaborative Learning", ICCV 2023. Facts also read from the authors' released configs
(``hkrawp_resnet.yaml``: training qualities raw, c23 and c40); nothing is copied.

Mechanism kept: every training image comes with the same frame at another quality
(capability ``quality_pair``: one of the frame's other extracted qualities among raw, c23 and
c40, drawn per item and epoch, so over training a c23 frame is paired with raw and with c40
where the tree has both; a seeded JPEG copy where it has neither, see
``benchmark.data.frames.TrainFrames``). One network sees both; the loss is the cross-entropy of
each plus ``alpha_hkr`` x the HSIC-based kernel regulariser (HKR): at several depths,
1 - nHSIC between the features of the two qualities (Gaussian kernel, width ``sigma``), weighted
per depth by ``hkr_weights``, so the model's representation of a frame depends on the frame and
not on its quality. The step is wrapped in adversarial weight perturbation (AWP, Wu et al.,
NeurIPS 2020): weights move by gamma * |w| * g / |g| along the loss gradient (per tensor), the
loss is taken there, the perturbation is removed, and the optimiser steps with that gradient
(``train_step``), after ``awp_warmup_epochs`` plain epochs.

Default backbone: ResNet-50 (``resnet50``; the paper also reports EfficientNet-B1,
``efficientnet_b1``) at 224 px. params.yaml uses timm's tiny ``test_resnet`` (same family, 0.4 M
parameters): two forward passes per image and the AWP step make QAD cost about four baseline
steps, and resnet10t took 3.9x the baseline's step. Defaults from the authors' released config:
alpha_hkr 0.003, sigma 6.0, per-depth weights (0.1, 0.25, 0.5, 0, 0, 0), AWP gamma 0.002 after 3
warm-up epochs; its recipe (``recipe``): Adam lr 2e-4, weight decay 1e-4, one-cycle schedule
(peak 2e-4), batch 64, 32 epochs.

Deviations and readings:
- the depths of ``hkr_weights`` are read as: each backbone stage after the stem (timm
  ``features_only`` levels 1..), then the pooled embedding, then the logit; the regulariser
  compares globally average-pooled stage features (N, C), not flattened maps;
- HKR maximises the dependence of the two qualities' features; written as 1 - nHSIC (>= 0,
  same gradient as -nHSIC);
- the release trains on frames of all three qualities and pairs them; here the train set is the
  protocol's (c23 for cross-quality) and each of its frames is paired with another quality of
  the same frame; the default grid extracts c23 and c40 only (``extract.qualities``), so there
  the pair is the c40 frame;
- the one-cycle schedule is PyTorch's default shape (30 % warm-up, cosine, initial lr = peak / 25,
  final = initial / 1e4; the config names only "one_cycle");
- AWP perturbs every trainable tensor with more than one dimension (conv and linear weights),
  not biases or norms; the warm-up counts epochs of the stage (``Method.on_train_iter``);
- batch-norm running statistics are updated by both forward passes of an AWP step;
- the perturbation's direction is the clean loss's gradient as ``optim_wrapper.backward`` leaves
  it (averaged over the ranks in data-parallel training; scaled under fp16 loss scaling, which
  the per-tensor normalisation g / |g| removes);
- single fake logit with binary cross-entropy instead of a two-way softmax; random
  initialisation unless ``pretrained`` is a local file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from benchmark.backbones import backbone_weights, create_backbone

# ---------------------------------------------------------------- HSIC (Gretton et al., ALT 2005)
# HSIC(X, Y) = tr(K H L H) / (n - 1)^2, K and L the kernel matrices of the n paired samples,
# H = I - 11^T / n; nHSIC = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)) lies in [0, 1] for
# positive semi-definite kernels (1 when both give the same centred kernel matrix).
KERNELS = ("gaussian", "linear")


def kernel_matrix(x: torch.Tensor, kernel: str = "gaussian", sigma: float = 1.0) -> torch.Tensor:
    """(n, n) kernel of the rows of ``x`` (n, d): Gaussian exp(-|xi - xj|^2 / (2 sigma^2)) or linear x x^T."""
    x = x.flatten(1)
    if kernel == "linear":
        return x @ x.T
    if kernel == "gaussian":
        sq = (x.unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(-1)  # exact (no |a|^2+|b|^2-2ab cancellation)
        return torch.exp(-sq / (2.0 * sigma ** 2))
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")


def hsic(x: torch.Tensor, y: torch.Tensor, kernel: str = "gaussian", sigma: float = 1.0) -> torch.Tensor:
    """Biased empirical HSIC of paired samples x (n, ...) and y (n, ...).

    Computed in float64: a Gaussian kernel of nearby features is 1 - tiny, and centring it
    in float32 cancels away the tiny part."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=x.dtype, device=x.device) - 1.0 / n
    k, l = kernel_matrix(x, kernel, sigma), kernel_matrix(y, kernel, sigma)
    return torch.trace(k @ h @ l @ h) / (n - 1) ** 2


def normalized_hsic(x: torch.Tensor, y: torch.Tensor, kernel: str = "gaussian", sigma: float = 1.0) -> torch.Tensor:
    """HSIC(x, y) / sqrt(HSIC(x, x) HSIC(y, y)) in x's dtype; 0 when either side is constant over the batch."""
    hxy = hsic(x, y, kernel, sigma)
    denom = torch.sqrt(hsic(x, x, kernel, sigma) * hsic(y, y, kernel, sigma))
    return (hxy / denom.clamp_min(1e-150)).to(x.dtype)


# ---------------------------------------------------------------- the method


@METHODS.register_module(name="qad")
class QAD(Method):
    paper_setting = {"backbone": "resnet50"}  # ResNet-50 at 224 px (cost table)
    paper_input_size = 224

    requires = frozenset({"quality_pair"})
    recipe = {"optimizer": {"type": "Adam", "lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4},
              "param_scheduler": [{"type": "OneCycleLR", "eta_max": 2e-4, "pct_start": 0.3, "anneal_strategy": "cos",
                                   "div_factor": 25.0, "final_div_factor": 1e4, "by_epoch": True,
                                   "convert_to_iter_based": True}],
              "batch_size": 64, "epochs": 32}

    def __init__(self, backbone: str = "resnet50", pretrained: str | None = None,
                 alpha_hkr: float = 0.003, hkr_weights=(0.1, 0.25, 0.5, 0.0, 0.0, 0.0),
                 sigma: float = 6.0, kernel: str = "gaussian",
                 awp_gamma: float = 0.002, awp_warmup_epochs: int = 3):
        super().__init__()
        if kernel not in KERNELS:
            raise UserError(f"qad kernel {kernel!r} unknown; choose one of {KERNELS}")
        self.backbone_name = backbone
        self.backbone = create_backbone(backbone, pretrained, features_only=True)
        self.weights = backbone_weights(self.backbone)
        self.use_input_stats(self.backbone)
        n_depths = len(self.backbone.feature_info) - 1 + 2  # stages after the stem, embedding, logit
        if len(hkr_weights) != n_depths:
            raise UserError(f"qad hkr_weights has {len(hkr_weights)} entries; {backbone} needs {n_depths} "
                            f"({n_depths - 2} stages after the stem, the embedding, the logit)")
        self.hkr_weights = tuple(float(w) for w in hkr_weights)
        self.alpha_hkr, self.sigma, self.kernel = float(alpha_hkr), float(sigma), kernel
        self.awp_gamma, self.awp_warmup_epochs = float(awp_gamma), int(awp_warmup_epochs)
        self.head = nn.Linear(self.backbone.feature_info.channels()[-1], 1)
        self._epoch = 0  # of the running stage, from Method.on_train_iter

    def on_train_iter(self, iteration: int, max_iters: int, iters_per_epoch: int) -> None:
        self._epoch = int(iteration) // max(int(iters_per_epoch), 1)

    def _features(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        maps = self.backbone(self.normalize(image))[1:]  # stages after the stem
        emb = maps[-1].mean((2, 3))
        logit = self.head(emb).squeeze(1)
        return logit, [m.mean((2, 3)) for m in maps] + [emb, logit.unsqueeze(1)]

    def forward(self, batch: dict) -> dict:
        logit, feats = self._features(batch["image"])
        out = {"logit": logit, "feats": feats}
        if "image_pair" in batch:
            out["logit_pair"], out["feats_pair"] = self._features(batch["image_pair"])
        return out

    def hkr(self, feats: list[torch.Tensor], feats_pair: list[torch.Tensor]) -> torch.Tensor:
        """sum_d w_d (1 - nHSIC(f_d, f_d')) over the depths with a non-zero weight."""
        terms = [w * (1.0 - normalized_hsic(a, b, self.kernel, self.sigma))
                 for w, a, b in zip(self.hkr_weights, feats, feats_pair) if w != 0.0]
        return torch.stack(terms).sum() if terms else feats[0].new_zeros(())

    def loss(self, out: dict, batch: dict) -> dict:
        y = batch["label"].float()
        ce = F.binary_cross_entropy_with_logits(out["logit"], y)
        if "logit_pair" not in out:
            return {"loss": ce, "bce": ce}
        ce_pair = F.binary_cross_entropy_with_logits(out["logit_pair"], y)
        hkr = self.hkr(out["feats"], out["feats_pair"])
        return {"loss": ce + ce_pair + self.alpha_hkr * hkr, "bce": ce, "bce_pair": ce_pair, "hkr": hkr}

    def awp_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad and p.dim() > 1]

    def train_step(self, batch: dict, optim_wrapper) -> dict:
        """AWP step: perturb along the loss gradient, take the loss there, restore, step."""
        if self.awp_gamma <= 0 or self._epoch < self.awp_warmup_epochs:
            return super().train_step(batch, optim_wrapper)
        params = self.awp_parameters()
        clean = self.loss(self(batch), batch)
        # through the optimiser wrapper, so the direction is the global batch's gradient under
        # data-parallel training (and scaled like the step's under fp16; only its direction is used)
        optim_wrapper.backward(clean["loss"])
        grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
        optim_wrapper.zero_grad()
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None and torch.isfinite(g.norm()) and g.norm() > 0:  # fp16 overflow: skip
                    p.add_(g, alpha=float(self.awp_gamma * p.norm() / g.norm()))
        adv = self.loss(self(batch), batch)
        optim_wrapper.backward(adv["loss"])
        with torch.no_grad():  # remove the perturbation exactly, before the optimiser moves
            for p, w in zip(params, saved):
                p.copy_(w)
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        return {**adv, "loss_clean": clean["loss"].detach()}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
