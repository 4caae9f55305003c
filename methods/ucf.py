"""UCF: uncovering common forgery features by disentanglement.

Paper: Z. Yan, Y. Zhang, Y. Fan, B. Wu, "UCF: Uncovering Common Features for Generalizable
Deepfake Detection", ICCV 2023.

Mechanism kept: two encoders, one for content and one for forgery; the forgery features are
split by two heads into *specific* features (which manipulation: 5-way cross-entropy on the
``manipulation`` label, capability ``manipulation_label``) and *common* features (real/fake:
the fake logit, binary cross-entropy). A decoder rebuilds each image from its content features
modulated (AdaIN) by forgery features: with its own (self-reconstruction) and with another
image's (cross-reconstruction), both compared with the image itself, so forgery features cannot
carry content. A contrastive (triplet margin) loss on the specific features pulls images of the
same manipulation together. Loss: L_sha + ``lambda_spe`` L_spe + ``lambda_rec`` L_rec +
``lambda_con`` L_con with the original's weights 1, 0.1, 0.3, 0.05.

Default backbone: EfficientNet-B4 (``efficientnet_b4``) for both encoders. params.yaml uses
``efficientnet_b0`` (same family) so the grid fits a CPU.

Deviations and readings:
- the cross-reconstruction partner of image i is image (i + N/2) mod N of the batch (the
  original pairs each fake with a real of a paired batch);
- specific/common heads are 1x1 conv + BN + ReLU on the forgery encoder's last stage; AdaIN
  takes its scale and shift from the concatenated pooled specific and common features;
- L_rec is the mean absolute error in normalised-image units; L_con is the mean over all
  valid (anchor, positive, negative) triplets of the batch of max(0, d(a,p) - d(a,n) + margin)
  on Euclidean distances of pooled specific features (``con_margin``, default 3.0);
- the content features are the content encoder's stage of output stride ``content_stride``
  (paper: its last stage, 32; params.yaml: 8, so a 64-px crop keeps the 8x8 content map a
  256-px crop has at stride 32); the encoder is truncated after that stage;
- evaluation uses the forgery encoder and the common head only (content encoder and decoder
  run in training mode only, as in the original's inference);
- single fake logit with binary cross-entropy instead of a two-way softmax; random
  initialisation unless ``pretrained`` is a local file (loaded into both encoders).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.data.frames import MANIPULATION_IDS
from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from benchmark.backbones import backbone_weights, create_backbone

N_MANIPULATIONS = len(MANIPULATION_IDS)  # real + every manipulation code the layout knows


def triplet_loss(emb: torch.Tensor, classes: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean max(0, d(a,p) - d(a,n) + margin) over all triplets (a != p same class, n other class)."""
    d = torch.cdist(emb, emb)
    same = classes.unsqueeze(0) == classes.unsqueeze(1)
    pos = same & ~torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    valid = pos.unsqueeze(2) & (~same).unsqueeze(1)  # [a, p, n]
    if not valid.any():
        return emb.new_zeros(())
    return F.relu(d.unsqueeze(2) - d.unsqueeze(1) + margin)[valid].mean()


def conv_block(a: int, b: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, k, padding=k // 2), nn.BatchNorm2d(b), nn.ReLU(inplace=True))


class AdaINDecoder(nn.Module):
    """Content map (N, C, h, w) + style vector (N, S) -> image (N, 3, H, W)."""

    def __init__(self, content_ch: int, style_dim: int, n_up: int, width: int = 64):
        super().__init__()
        self.inp = nn.Conv2d(content_ch, width, 1)
        self.affine = nn.Linear(style_dim, 2 * width)
        chans = [width] + [max(width // 2 ** (i + 1), 16) for i in range(n_up)]
        self.ups = nn.Sequential(*(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_block(a, b, 3))
                                   for a, b in zip(chans, chans[1:])))
        self.to_img = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, content: torch.Tensor, style: torch.Tensor, size) -> torch.Tensor:
        scale, shift = self.affine(style).chunk(2, dim=1)
        h = F.instance_norm(self.inp(content)) * (1 + scale[..., None, None]) + shift[..., None, None]
        return F.interpolate(self.to_img(self.ups(F.relu(h))), size=size, mode="bilinear", align_corners=False)


@METHODS.register_module(name="ucf")
class UCF(Method):
    paper_setting = {"backbone": "efficientnet_b4", "content_stride": 32}  # EfficientNet-B4 at 256 px (cost table)
    paper_input_size = 256

    requires = frozenset({"manipulation_label"})

    def __init__(self, backbone: str = "efficientnet_b4", pretrained: str | None = None,
                 feat_dim: int = 256, lambda_spe: float = 0.1, lambda_rec: float = 0.3,
                 lambda_con: float = 0.05, con_margin: float = 3.0, content_stride: int = 32,
                 decoder_width: int = 64):
        super().__init__()
        self.backbone_name = backbone
        self.encoder_f = create_backbone(backbone, pretrained, features_only=True, out_indices=(-1,))
        self.encoder_c = create_backbone(backbone, pretrained, num_classes=0)
        reductions = [info["reduction"] for info in self.encoder_c.feature_info]
        if content_stride not in reductions:
            raise UserError(f"ucf content_stride {content_stride} is not a stage output of {backbone}; choose one of {reductions}")
        self.content_index = reductions.index(content_stride)
        content_ch = self.encoder_c.feature_info[self.content_index]["num_chs"]
        self.encoder_c.prune_intermediate_layers(indices=[self.content_index], prune_norm=True, prune_head=True)
        self.weights = backbone_weights(self.encoder_f)
        ch = self.encoder_f.feature_info.channels()[-1]
        self.specific, self.common = conv_block(ch, feat_dim), conv_block(ch, feat_dim)
        self.head_spe, self.head_sha = nn.Linear(feat_dim, N_MANIPULATIONS), nn.Linear(feat_dim, 1)
        n_up = max(1, int(content_stride).bit_length() - 1)
        self.decoder = AdaINDecoder(content_ch, 2 * feat_dim, n_up, decoder_width)
        self.lambda_spe, self.lambda_rec, self.lambda_con = float(lambda_spe), float(lambda_rec), float(lambda_con)
        self.con_margin = float(con_margin)

    def forward(self, batch: dict) -> dict:
        x = self.normalize(batch["image"])
        f = self.encoder_f(x)[-1]
        spe, sha = self.specific(f).mean((2, 3)), self.common(f).mean((2, 3))
        out = {"logit": self.head_sha(sha).squeeze(1), "logit_spe": self.head_spe(spe), "specific": spe}
        if self.training:
            content = self.encoder_c.forward_intermediates(x, indices=[self.content_index], intermediates_only=True)[0]
            style = torch.cat([spe, sha], 1)
            partner = torch.roll(torch.arange(len(x), device=x.device), -(len(x) // 2))
            out["recon_self"] = self.decoder(content, style, x.shape[-2:])
            out["recon_cross"] = self.decoder(content, style[partner], x.shape[-2:])
            out["target"] = x
        return out

    def loss(self, out: dict, batch: dict) -> dict:
        sha = F.binary_cross_entropy_with_logits(out["logit"], batch["label"].float())
        terms = {"sha": sha}
        if "manipulation" in batch:
            terms["spe"] = F.cross_entropy(out["logit_spe"], batch["manipulation"])
            terms["con"] = triplet_loss(out["specific"], batch["manipulation"], self.con_margin)
        if "recon_self" in out:
            terms["rec"] = ((out["recon_self"] - out["target"]).abs().mean()
                            + (out["recon_cross"] - out["target"]).abs().mean())
        weights = {"sha": 1.0, "spe": self.lambda_spe, "rec": self.lambda_rec, "con": self.lambda_con}
        return {"loss": sum(weights[k] * v for k, v in terms.items()), **terms}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
