"""RECCE: end-to-end reconstruction-classification learning.

Paper: J. Cao, C. Ma, T. Yao, S. Chen, S. Ding, X. Yang, "End-to-End Reconstruction-
Classification Learning for Face Forgery Detection", CVPR 2022.

Mechanism kept: an encoder-decoder learns to reconstruct *real* faces only (reconstruction loss
on real samples; fakes are not reconstructed on purpose, so their reconstruction error is
large); a metric-learning loss makes real embeddings compact and pushes fakes away from them;
graph reasoning fuses encoder and decoder features (nodes = the two feature maps' locations,
edges = their feature similarity, one graph-convolution layer); reconstruction-guided attention
re-weights the fused features with a map computed from the reconstruction difference
|x - x_hat|; a linear head on the pooled result gives the fake logit. Loss:
BCE + ``lambda_rec`` * L_rec + ``lambda_metric`` * L_metric (paper: 0.1 and 0.1).

Default backbone: Xception (``legacy_xception`` in timm). params.yaml uses ``resnet10t``:
timm has no Xception smaller than ~20 M parameters / 0.4 GFLOPs at 64 px, which does not fit
the CPU grid (cost of the paper backbone: see the cost table).

Deviations:
- one scale: the decoder starts from the encoder's last stage, graph reasoning and attention
  act on that stage (the original works at several scales in the middle of Xception and
  continues through its exit flow afterwards);
- the decoder is nearest-neighbour upsampling + 3x3 convolutions to the input size, predicting
  the normalised image; L_rec is the mean absolute error over real samples (0 with no real);
- L_metric (a reading of the paper's loss): mean cosine distance (1 - cos) over real-real
  pairs + mean max(0, cos - ``metric_margin``) over real-fake pairs of the pooled encoder
  embeddings;
- single fake logit with binary cross-entropy instead of a two-way softmax; random
  initialisation unless ``pretrained`` is a local file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.method import Method
from benchmark.registry import METHODS
from benchmark.backbones import backbone_weights, create_backbone


def real_reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean |recon - target| over the real samples (label 0) only; 0 when there is none."""
    real = (label == 0).to(recon.dtype).view(-1, *([1] * (recon.dim() - 1)))
    per_pixel = (recon - target).abs() * real
    n = real.sum() * recon[0].numel()
    return per_pixel.sum() / n.clamp_min(1.0)


def metric_loss(emb: torch.Tensor, label: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Real embeddings compact (1 - cos over real pairs), fakes away (max(0, cos - margin) real-fake)."""
    z = F.normalize(emb, dim=1)
    cos = z @ z.T
    real, fake = label == 0, label != 0
    rr = real.unsqueeze(1) & real.unsqueeze(0) & ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    rf = real.unsqueeze(1) & fake.unsqueeze(0)
    zero = emb.new_zeros(())
    pull = (1.0 - cos[rr]).mean() if rr.any() else zero
    push = F.relu(cos[rf] - margin).mean() if rf.any() else zero
    return pull + push


class GraphReasoning(nn.Module):
    """One graph convolution over the locations of two feature maps (encoder, decoder).

    Nodes: the h*w encoder and h*w decoder locations, projected to ``dim``. Adjacency:
    row-softmax of the nodes' scaled dot products. Output: the encoder map plus the graph's
    update of its nodes, (N, C, h, w).
    """

    def __init__(self, enc_ch: int, dec_ch: int, dim: int):
        super().__init__()
        self.enc, self.dec = nn.Conv2d(enc_ch, dim, 1), nn.Conv2d(dec_ch, dim, 1)
        self.gcn = nn.Linear(dim, dim)
        self.out = nn.Conv2d(dim, enc_ch, 1)

    def forward(self, f_enc: torch.Tensor, f_dec: torch.Tensor) -> torch.Tensor:
        n, _, h, w = f_enc.shape
        f_dec = F.adaptive_avg_pool2d(f_dec, (h, w))
        nodes = torch.cat([self.enc(f_enc).flatten(2), self.dec(f_dec).flatten(2)], 2).transpose(1, 2)
        adj = torch.softmax(nodes @ nodes.transpose(1, 2) / nodes.shape[-1] ** 0.5, dim=-1)
        upd = F.relu(self.gcn(adj @ nodes))[:, : h * w]  # the encoder nodes
        return f_enc + self.out(upd.transpose(1, 2).reshape(n, -1, h, w))


class Decoder(nn.Module):
    """Upsample x2 + conv until the input size; returns (intermediate map, reconstruction)."""

    def __init__(self, in_ch: int, n_up: int, width: int = 64):
        super().__init__()
        chans = [in_ch] + [max(width // 2 ** i, 16) for i in range(n_up)]
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1),
                          nn.BatchNorm2d(b), nn.ReLU(inplace=True)) for a, b in zip(chans, chans[1:]))
        self.to_img = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, f: torch.Tensor, size: tuple[int, int]):
        mid = None
        for i, up in enumerate(self.ups):
            f = up(f)
            mid = f if i == 0 else mid  # first decoder map: the graph's decoder nodes
        return mid, F.interpolate(self.to_img(f), size=size, mode="bilinear", align_corners=False)


@METHODS.register_module(name="recce")
class RECCE(Method):
    paper_setting = {"backbone": "legacy_xception"}  # Xception at 299 px (cost table)
    paper_input_size = 299

    def __init__(self, backbone: str = "legacy_xception", pretrained: str | None = None,
                 lambda_rec: float = 0.1, lambda_metric: float = 0.1, metric_margin: float = 0.0,
                 graph_dim: int = 64, decoder_width: int = 64):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = create_backbone(backbone, pretrained, features_only=True, out_indices=(-1,))
        self.weights = backbone_weights(self.backbone)
        ch = self.backbone.feature_info.channels()[-1]
        n_up = max(1, int(self.backbone.feature_info.reduction()[-1]).bit_length() - 1)
        self.decoder = Decoder(ch, n_up, decoder_width)
        self.graph = GraphReasoning(ch, self.decoder.ups[0][1].out_channels, graph_dim)
        self.attention = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True),
                                       nn.Conv2d(16, 1, 3, padding=1))
        self.head = nn.Linear(ch, 1)
        self.lambda_rec, self.lambda_metric = float(lambda_rec), float(lambda_metric)
        self.metric_margin = float(metric_margin)

    def forward(self, batch: dict) -> dict:
        x = self.normalize(batch["image"])
        f = self.backbone(x)[-1]
        f_dec, recon = self.decoder(f, x.shape[-2:])
        fused = self.graph(f, f_dec)
        att = torch.sigmoid(self.attention((recon - x).abs()))  # reconstruction-guided attention
        fused = fused * (1.0 + F.adaptive_avg_pool2d(att, fused.shape[-2:]))
        emb = f.mean((2, 3))
        return {"logit": self.head(fused.mean((2, 3))).squeeze(1), "recon": recon, "target": x, "embedding": emb}

    def loss(self, out: dict, batch: dict) -> dict:
        label = batch["label"]
        bce = F.binary_cross_entropy_with_logits(out["logit"], label.float())
        rec = real_reconstruction_loss(out["recon"], out["target"], label)
        met = metric_loss(out["embedding"], label, self.metric_margin)
        return {"loss": bce + self.lambda_rec * rec + self.lambda_metric * met, "bce": bce, "rec": rec, "metric": met}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
