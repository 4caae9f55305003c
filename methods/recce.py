"""RECCE: end-to-end reconstruction-classification learning.

Paper: J. Cao, C. Ma, T. Yao, S. Chen, S. Ding, X. Yang, "End-to-End Reconstruction-
Classification Learning for Face Forgery Detection", CVPR 2022. Facts also read from the
authors' release (its model, trainer and losses, as DeepfakeBench reuses them); nothing is
copied. The layers are in methods/_recce_parts.py.

Mechanism kept, at the original's scales:
- the encoder runs to its stride-16 map; a decoder learns to reconstruct *real* faces from it
  (stride 16 -> 8 -> 4 -> 2 -> the image, tanh, in the [-1, 1] scale of the original's input
  2x - 1); the reconstruction loss is the mean absolute error over the real images
  (``real_reconstruction_loss``), so fakes reconstruct badly;
- graph reasoning fuses the stride-16 encoder map with the stride-8 and stride-4 decoder maps
  (each encoder location a vertex joined to the decoder locations under it; methods/_recce_parts),
  added to the encoder map; reconstruction-guided attention re-weights the result with a map
  computed from |x - x_hat|; the rest of the encoder (its stride-32 stage), average pool,
  dropout, linear head;
- the metric loss in its form (``metric_loss``), at each of the three levels (encoder stride 16,
  decoder stride 8, decoder stride 4): with z the L2-normalised pooled features and
  C = (z z^T + 1) / 2, per level max(0, 1 - mean C over real-real pairs (i != j) + mean C over
  real-fake pairs), summed over the levels: reals pulled together, fakes pushed away;
- the classification loss with flooding (Ishida et al. 2020), |BCE - b| + b, b = 0.04
  (``flood``); total loss = flood(BCE) + 0.1 L_rec + 0.1 L_metric (``lambda_rec``, ``lambda_metric``).

Original default backbone: Xception (``legacy_xception`` in timm) at 299 px: encoder blocks 1-4
to stride 16, graph reasoning after block 7, attention after block 8, blocks 9-12 and the exit
convs after it. params.yaml uses ``resnet10t`` (timm has no Xception small enough for the CPU
grid); on a backbone cut at its feature stages (methods/_staged.py) the graph reasoning and the
attention follow the stride-16 stage directly and the stride-32 stage comes after them. The
original's recipe (``recipe``): Adam lr 2e-4, weight decay 1e-5, batch 32, the lr halved every 10
epochs on FF++ (StepLR); the release trains for a number of steps set per run, so no epoch count
is declared (``train.epochs`` applies).

Deviations from the original:
- the encoder stages between the reconstruction branch point and the graph reasoning (Xception
  blocks 5-7) and between the graph reasoning and the attention (block 8) have no counterpart on
  a backbone cut at its stages: both modules follow the stride-16 stage;
- decoder blocks are nearest upsampling + 3x3 conv + BN + ReLU and a plain residual block
  (Xception's separable-conv blocks in the original); widths ``decoder_width`` (stride 8),
  half of it (stride 4), a quarter (stride 2) instead of 256 / 128 / 64; graph width ``graph_dim``
  instead of 256;
- the release adds white noise of std 1e-6 to half of the training images; left out;
- the metric loss's empty mean (no real-real or no real-fake pair in a batch) counts as 0, as
  the release's eps-guarded division gives;
- single fake logit with binary cross-entropy instead of a two-way softmax; random
  initialisation unless ``pretrained`` is a local file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.method import Method
from benchmark.registry import METHODS
from methods._recce_parts import Decoder, GraphReasoning, GuidedAttention
from methods._staged import Staged


def real_reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean |recon - target| over the real samples (label 0) only; 0 when there is none."""
    real = (label == 0).to(recon.dtype).view(-1, *([1] * (recon.dim() - 1)))
    per_pixel = (recon - target).abs() * real
    n = real.sum() * recon[0].numel()
    return per_pixel.sum() / n.clamp_min(1.0)


def similarity(emb: torch.Tensor) -> torch.Tensor:
    """(cos + 1) / 2 between the rows of ``emb`` (N, D)."""
    z = F.normalize(emb, dim=1)
    return (z @ z.T + 1) / 2


def metric_loss(levels: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """sum over levels of max(0, 1 - mean C[real, real, i != j] + mean C[real, fake]) (module docstring)."""
    real = label == 0
    eye = torch.eye(len(label), dtype=torch.bool, device=label.device)
    same = real.unsqueeze(1) & real.unsqueeze(0) & ~eye
    diff = real.unsqueeze(1) != real.unsqueeze(0)
    total = levels[0].new_zeros(())
    for emb in levels:
        c = similarity(emb)
        pull = c[same].mean() if same.any() else c.new_zeros(())
        push = c[diff].mean() if diff.any() else c.new_zeros(())
        total = total + F.relu(1 - pull + push)
    return total


def flood(loss: torch.Tensor, b: float) -> torch.Tensor:
    """Flooding: |loss - b| + b (gradient ascent below the flood level b)."""
    return (loss - b).abs() + b


@METHODS.register_module(name="recce")
class RECCE(Method):
    paper_setting = {"backbone": "legacy_xception"}  # Xception at 299 px (cost table)
    paper_input_size = 299
    recipe = {"optimizer": {"type": "Adam", "lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-5},
              "param_scheduler": [{"type": "StepLR", "step_size": 10, "gamma": 0.5, "by_epoch": True}],
              "batch_size": 32}

    def __init__(self, backbone: str = "legacy_xception", pretrained: str | None = None,
                 lambda_rec: float = 0.1, lambda_metric: float = 0.1, flood_level: float = 0.04,
                 graph_dim: int = 64, decoder_width: int = 64, dropout: float = 0.2):
        super().__init__()
        self.backbone_name = backbone
        self.net = Staged(backbone, 3, pretrained)
        self.weights = self.net.weights
        self.use_input_stats(self.net)
        self.at16 = self.net.index(16)
        ch = self.net.channels
        self.decoder = Decoder(ch[self.at16], decoder_width, dropout)
        self.graph = GraphReasoning(ch[self.at16], *self.decoder.widths, graph_dim, dropout)
        self.attention = GuidedAttention(ch[self.at16], dropout)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(ch[-1], 1)
        self.lambda_rec, self.lambda_metric, self.flood_level = float(lambda_rec), float(lambda_metric), float(flood_level)

    def forward(self, batch: dict) -> dict:
        image = batch["image"]
        x, target = self.normalize(image), 2 * image - 1
        stages = self.net.stages
        for stage in stages[: self.at16 + 1]:
            x = stage(x)
        d8, d4, recon = self.decoder(x, image.shape[-2:])
        levels = [x.mean((2, 3)), d8.mean((2, 3)), d4.mean((2, 3))]
        f = self.attention(target, recon, x + self.graph(x, d8, d4))
        for stage in stages[self.at16 + 1:]:
            f = stage(f)
        feat = f.mean((2, 3))
        return {"logit": self.head(self.drop(feat)).squeeze(1), "feature": feat, "recon": recon, "target": target,
                "levels": levels}

    def loss(self, out: dict, batch: dict) -> dict:
        label = batch["label"]
        bce = F.binary_cross_entropy_with_logits(out["logit"], label.float())
        rec = real_reconstruction_loss(out["recon"], out["target"], label)
        met = metric_loss(out["levels"], label)
        cls = flood(bce, self.flood_level)
        return {"loss": cls + self.lambda_rec * rec + self.lambda_metric * met, "bce": bce, "rec": rec, "metric": met}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
