"""SRM: high-frequency (SRM residual) stream guiding an RGB stream.

Paper: Y. Luo, Y. Zhang, J. Yan, W. Liu, "Generalizing Face Forgery Detection with
High-frequency Features", CVPR 2021. Facts also read from DeepfakeBench's SRM detector, whose
modules it says the authors provided; nothing is copied. The layers are in methods/_srm_parts.py.

Mechanism kept:
- fixed SRM high-pass filters (the three 5x5 kernels of Fridrich & Kodovsky's rich models, KB/4,
  KV/12 and the horizontal second-order /2; a non-trainable buffer), each summed over the three
  colour channels and truncated to [-3, 3], applied to the image at the original's input scale,
  [-1, 1] (2x - 1, whatever the backbone's own normalisation), give the high-frequency input;
- multi-scale high-frequency stream: after each stage in ``ms_stages`` the SRM filters are
  applied depthwise to the RGB stream's features, truncated, projected by 1x1 conv + BN + ReLU
  and added to the high-frequency stream (then a ReLU);
- the learned residual-guided spatial attention on the input: the SRM residual of the SRM input
  -> conv 3x3 s2 + BN + ReLU -> conv 3x3 + BN + ReLU -> [channel mean, channel max] -> conv 7x7
  -> sigmoid gives a map that re-weights the RGB features after the last ``ms_stages`` stage,
  rgb + rgb * map, then BN + ReLU;
- two dual cross-modality attentions (DCMA) after the stages in ``dcma_stages``, with learned
  projections: keys of both modalities (1x1 conv to C/8 each, then a shared 1x1 conv) give an
  energy matrix over positions, passed through a learned linear map over positions (one per
  direction) and a softmax; each modality adds gamma * (the other's values attended), gammas
  starting at 0;
- the fusion module: concat both streams' last maps -> 1x1 conv + BN + ReLU -> times a channel
  attention (average- and max-pooled, shared MLP C -> C/16 -> C, sigmoid) -> ReLU, average pool;
- AM-Softmax loss (Wang et al. 2018) with m = 0.45, s = 30, as the original trains it
  (``am_softmax``): cos theta_k between the L2-normalised feature and the L2-normalised class
  weight k, loss CE(s (cos theta - m [k = y])); the fake logit is s (cos theta_fake - cos
  theta_real), so sigmoid(logit) is the softmax P(fake) of the scaled cosines.

Original default backbone: Xception (``legacy_xception`` in timm) at 299 px, two streams; the
multi-scale part acts after its conv1 and conv2 (stride 2), the attention map after conv2, the
two DCMAs after Xception blocks 3 and 7 (both at stride 16, in the middle flow, 728 channels),
the fusion after conv4. Mapped onto a timm backbone cut at its feature stages
(methods/_staged.py): ``ms_stages: [0, 1]`` (the stride-2 stem and the stride-4 stage),
``dcma_stages: [-2, -2]`` (both after the stride-16 stage, one after the other: the default
backbone's stride-16 stage is one block, so there is no block to put between them).
The original's recipe (``recipe``, DeepfakeBench): Adam lr 2e-4, weight decay 5e-4, batch 32,
10 epochs.

Deviations from the original:
- stage positions as mapped above; the attention map is average-pooled to the RGB map's size
  (Xception's unpadded convs make the sizes match; timm's padded stages differ);
- ``am_softmax: cosine`` (default) is AM-Softmax as defined; DeepfakeBench feeds its plain linear
  head's outputs to the AM-Softmax loss in place of cosines (``logits``: logit = the difference of
  the two outputs, loss CE(s (z - m [k = y]))); the table says which reading it used;
- DCMA's learned maps over positions are built for ``input_size`` (the stage's h x w); another
  input size is refused with one line;
- random initialisation unless ``pretrained`` (a local file, loaded into both streams).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from methods._recipes import deepfakebench
from methods._srm_parts import DCMA, AMSoftmaxHead, Fusion, PixelAttention, SRMFilter, SeparateSRM
from methods._staged import Staged

PAPER_BACKBONE, PAPER_INPUT_SIZE = "legacy_xception", 299


@METHODS.register_module(name="srm")
class SRMNet(Method):
    paper_setting = {"backbone": PAPER_BACKBONE, "input_size": PAPER_INPUT_SIZE}
    paper_input_size = PAPER_INPUT_SIZE
    recipe = deepfakebench(batch_size=32, epochs=10)

    def __init__(self, backbone: str = PAPER_BACKBONE, pretrained: str | None = None,
                 input_size: int = PAPER_INPUT_SIZE, ms_stages=(0, 1), dcma_stages=(-2, -2),
                 truncate: float = 3.0, am_softmax: str = "cosine", margin: float = 0.45, scale: float = 30.0):
        super().__init__()
        self.backbone_name, self.input_size = backbone, int(input_size)
        self.srm = SRMFilter(truncate)
        self.rgb_stream = Staged(backbone, 3, pretrained)
        self.hf_stream = Staged(backbone, 3, pretrained)
        self.weights = self.rgb_stream.weights
        self.use_input_stats(self.rgb_stream)
        n, ch = len(self.rgb_stream), self.rgb_stream.channels
        self.ms_at = sorted({int(s) % n for s in ms_stages})
        self.dcma_at = [int(s) % n for s in dcma_stages]
        with torch.no_grad():
            sizes = [tuple(f.shape[-2:]) for f in self.rgb_stream.eval()(torch.zeros(1, 3, self.input_size, self.input_size))]
        self.rgb_stream.train()
        self.ms = nn.ModuleDict({str(i): SeparateSRM(ch[i], ch[i], truncate) for i in self.ms_at})
        self.attention = PixelAttention(truncate)
        self.attention_post = nn.Sequential(nn.BatchNorm2d(ch[self.ms_at[-1]]), nn.ReLU(inplace=True))
        self.dcma = nn.ModuleList(DCMA(ch[i], sizes[i][0] * sizes[i][1]) for i in self.dcma_at)
        self.fusion = Fusion(2 * ch[-1], ch[-1])
        self.head = AMSoftmaxHead(ch[-1], am_softmax, margin, scale)

    def check_input_size(self, size: int) -> None:
        if int(size) != self.input_size:
            raise UserError(f"srm was built for {self.input_size}-px input (its DCMA maps are over that many "
                            f"positions), got {size} px; set methods.srm.input_size: {size}")

    def forward(self, batch: dict) -> dict:
        image = batch["image"]
        if image.shape[-1] != image.shape[-2]:
            raise UserError(f"srm takes square crops, got {tuple(image.shape[-2:])}")
        self.check_input_size(image.shape[-1])
        rgb = self.normalize(image)
        hf = self.srm.image(2 * image - 1)  # the original's input scale, [-1, 1]
        att = self.attention(hf)
        for i, (sr, sh) in enumerate(zip(self.rgb_stream.stages, self.hf_stream.stages)):
            rgb, hf = sr(rgb), sh(hf)
            if i in self.ms_at:
                hf = F.relu(hf + self.ms[str(i)](rgb))
            if i == self.ms_at[-1]:
                rgb = self.attention_post(rgb + rgb * F.adaptive_avg_pool2d(att, rgb.shape[-2:]))
            for k, at in enumerate(self.dcma_at):
                if at == i:
                    rgb, hf = self.dcma[k](rgb, hf)
        feat = self.fusion(rgb, hf)
        return {"logit": self.head(feat), "feature": feat}

    def loss(self, out: dict, batch: dict) -> dict:
        am = self.head.loss(out["feature"], batch["label"])
        return {"loss": am, "am_softmax": am}

    def provenance(self) -> dict:
        return {"backbone": self.backbone_name, "weights": self.weights}
