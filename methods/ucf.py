"""UCF: uncovering common forgery features by disentanglement.

Paper: Z. Yan, Y. Zhang, Y. Fan, B. Wu, "UCF: Uncovering Common Features for Generalizable
Deepfake Detection", ICCV 2023. Facts also read from the authors' implementation in
DeepfakeBench (the first author's; ``ucf_detector.py``, ``ucf.yaml``); nothing is copied.

Mechanism kept: two encoders, one for content and one for forgery; the forgery features are
split by two heads into *specific* features (which manipulation: cross-entropy over
``MANIPULATION_IDS`` on the ``manipulation`` label, capability ``manipulation_label``) and *common* features (real/fake:
the fake logit, binary cross-entropy). A decoder rebuilds images from content features
modulated (AdaIN) by forgery features [specific, common]; the reconstruction loss is the sum of
four mean L1 terms: the reals' and the fakes' self-reconstructions (own content, own forgery
features), and the reals' and the fakes' cross-reconstructions (own content, the forgery
features of a partner of the other label), each against the image whose content it used.
During training, with probability 0.7 per batch (``shuffle_prob``), the common features used for
reconstruction are shuffled among the images of the same label (common-feature shuffling).
The contrastive term (``contrastive_loss``) acts on the pooled common features (positive: another
image of the same label; negative: one of the other label) and on the pooled specific features
(positive: another image of the same manipulation; negative: one of the other label), each
split by the anchor's label into a real-anchored and a fake-anchored mean of
max(0, d(a, p) - d(a, n) + margin), margin 3, Euclidean distances: four terms summed.
Loss: L_sha + ``lambda_spe`` L_spe + ``lambda_rec`` L_rec + ``lambda_con`` L_con with the
original's weights 1, 0.1, 0.3, 0.05.

Original default backbone: Xception (``legacy_xception`` in timm) for both encoders, at 256 px
(the authors' config; its forgery map is reduced to 512 channels and split into two 256-channel
halves). params.yaml uses timm's tiny ``test_efficientnet`` (0.1 M parameters) so the two encoders
and the decoder stay near the baseline's step time (efficientnet_b0 took 5x the baseline's step).
The original's recipe (``recipe``, DeepfakeBench): Adam lr 2e-4, weight decay 5e-4, 16 real-fake
pairs (32 images) per batch, 5 epochs.

Deviations and readings:
- the original's batches are half real, half fake, paired; here each image's cross-reconstruction
  partner is the k-th image of the other label (k = its rank within its own label, modulo that
  group's size), so reals are reused when fakes outnumber them; with no image of the other label
  in a batch the cross terms are 0;
- the contrastive term averages over every valid (anchor, positive, negative) triplet of the
  batch; the original draws one positive and one negative per anchor at random (the same
  expectation);
- specific/common heads are 1x1 conv + BN + ReLU on the forgery encoder's last stage (the
  original: three 1x1 convs with LeakyReLU, then an MLP head); AdaIN takes its scale and shift
  from the concatenated pooled specific and common features through a linear layer (the
  original: the per-channel mean and std of the forgery feature map), and the decoder is
  nearest upsampling + conv blocks without the original's tanh and dropout;
- the content features are the content encoder's stage of output stride ``content_stride``
  (paper: its last stage, 32; params.yaml: 8, so a 64-px crop keeps the 8x8 content map a
  256-px crop has at stride 32); the encoder is truncated after that stage;
- evaluation uses the forgery encoder and the common head only (content encoder and decoder
  run in training mode only, as in the original's inference);
- the specific head is 6-way (real and the layout's five manipulation codes, FaceShifter
  included); the original's FF++ training has real + DF/F2F/FS/NT, 5 classes; a code absent from
  the train set is a class no sample has;
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
from methods._recipes import deepfakebench

N_MANIPULATIONS = len(MANIPULATION_IDS)  # real + every manipulation code the layout knows


def triplet_terms(emb: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, group: torch.Tensor,
                  margin: float) -> torch.Tensor:
    """Sum over the anchor groups (values of ``group``) of the mean of max(0, d(a,p) - d(a,n) + margin)
    over triplets with p != a, positive[p] == positive[a] and negative[n] != negative[a]."""
    d = torch.cdist(emb, emb)
    eye = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    pos = (positive.unsqueeze(0) == positive.unsqueeze(1)) & ~eye
    neg = negative.unsqueeze(0) != negative.unsqueeze(1)
    valid = pos.unsqueeze(2) & neg.unsqueeze(1)  # [a, p, n]
    hinge = F.relu(d.unsqueeze(2) - d.unsqueeze(1) + margin)
    total = emb.new_zeros(())
    for g in group.unique():
        sel = valid & (group == g).view(-1, 1, 1)
        if sel.any():
            total = total + hinge[sel].mean()
    return total


def contrastive_loss(common: torch.Tensor, specific: torch.Tensor, label: torch.Tensor, manipulation: torch.Tensor,
                     margin: float) -> torch.Tensor:
    """UCF's four contrastive terms (module docstring): common by label, specific by manipulation
    against the other label, each real- and fake-anchored."""
    return (triplet_terms(common, label, label, label, margin)
            + triplet_terms(specific, manipulation, label, label, margin))


def partners(label: torch.Tensor) -> torch.Tensor:
    """For each image, an image of the other label (the k-th of that label, k its own rank mod
    that group's size); itself when the batch holds one label only."""
    out = torch.arange(len(label), device=label.device)
    real, fake = torch.where(label == 0)[0], torch.where(label != 0)[0]
    if len(real) and len(fake):
        out[real] = fake[torch.arange(len(real), device=label.device) % len(fake)]
        out[fake] = real[torch.arange(len(fake), device=label.device) % len(real)]
    return out


def shuffle_within(label: torch.Tensor) -> torch.Tensor:
    """A random permutation of the batch that maps every image to one of the same label."""
    out = torch.arange(len(label), device=label.device)
    for g in label.unique():
        idx = torch.where(label == g)[0]
        out[idx] = idx[torch.randperm(len(idx), device=label.device)]
    return out


def reconstruction_loss(out: dict, label: torch.Tensor) -> torch.Tensor:
    """Sum of four mean L1 terms: self and cross reconstructions of the reals and of the fakes."""
    terms = []
    cross_ok = bool((label == 0).any() and (label != 0).any())
    for group in (label == 0, label != 0):
        if group.any():
            target = out["target"][group]
            terms.append((out["recon_self"][group] - target).abs().mean())
            if cross_ok:
                terms.append((out["recon_cross"][group] - target).abs().mean())
    return torch.stack(terms).sum()


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
    paper_setting = {"backbone": "legacy_xception", "content_stride": 32}  # Xception at 256 px (cost table)
    paper_input_size = 256
    recipe = deepfakebench(batch_size=32, epochs=5)

    requires = frozenset({"manipulation_label"})

    def __init__(self, backbone: str = "legacy_xception", pretrained: str | None = None,
                 feat_dim: int = 256, lambda_spe: float = 0.1, lambda_rec: float = 0.3,
                 lambda_con: float = 0.05, con_margin: float = 3.0, content_stride: int = 32,
                 decoder_width: int = 64, shuffle_prob: float = 0.7):
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
        self.use_input_stats(self.encoder_f)
        ch = self.encoder_f.feature_info.channels()[-1]
        self.specific, self.common = conv_block(ch, feat_dim), conv_block(ch, feat_dim)
        self.head_spe, self.head_sha = nn.Linear(feat_dim, N_MANIPULATIONS), nn.Linear(feat_dim, 1)
        n_up = max(1, int(content_stride).bit_length() - 1)
        self.decoder = AdaINDecoder(content_ch, 2 * feat_dim, n_up, decoder_width)
        self.lambda_spe, self.lambda_rec, self.lambda_con = float(lambda_spe), float(lambda_rec), float(lambda_con)
        self.con_margin, self.shuffle_prob = float(con_margin), float(shuffle_prob)

    def forward(self, batch: dict) -> dict:
        x = self.normalize(batch["image"])
        f = self.encoder_f(x)[-1]
        spe, sha = self.specific(f).mean((2, 3)), self.common(f).mean((2, 3))
        out = {"logit": self.head_sha(sha).squeeze(1), "logit_spe": self.head_spe(spe), "specific": spe,
               "common": sha, "feature": sha}
        if self.training:
            label = batch["label"]
            content = self.encoder_c.forward_intermediates(x, indices=[self.content_index], intermediates_only=True)[0]
            if float(torch.rand(())) < self.shuffle_prob:  # common-feature shuffling within each label
                sha = sha[shuffle_within(label)]
            style = torch.cat([spe, sha], 1)
            out["recon_self"] = self.decoder(content, style, x.shape[-2:])
            out["recon_cross"] = self.decoder(content, style[partners(label)], x.shape[-2:])
            out["target"] = x
        return out

    def loss(self, out: dict, batch: dict) -> dict:
        sha = F.binary_cross_entropy_with_logits(out["logit"], batch["label"].float())
        terms = {"sha": sha}
        if "manipulation" in batch:
            terms["spe"] = F.cross_entropy(out["logit_spe"], batch["manipulation"])
            terms["con"] = contrastive_loss(out["common"], out["specific"], batch["label"], batch["manipulation"],
                                            self.con_margin)
        if "recon_self" in out:
            terms["rec"] = reconstruction_loss(out, batch["label"])
        weights = {"sha": 1.0, "spe": self.lambda_spe, "rec": self.lambda_rec, "con": self.lambda_con}
        return {"loss": sum(weights[k] * v for k, v in terms.items()), **terms}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
