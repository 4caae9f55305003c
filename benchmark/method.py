"""The interface every registered deepfake detector implements (DESIGN §4).

A method is an ``nn.Module`` registered in ``METHODS`` under a short name. The
engine hands it a batch dict and never looks at which method it is:

``batch`` keys (all tensors, first dimension N):
  ``image``        float32 (N, 3, H, W) in [0, 1], RGB, exactly what is scored;
  ``label``        int64 (N,), 1 = fake, 0 = real;
  ``vqi_level``,   int64 (N,) in 1..K, present when ``"indicator_levels"`` is in
  ``fii_level``    ``requires`` (computed on this very image, after any
                   compression or perturbation).
  ``image_pair``   float32 (N, 3, H, W): the same frame at another quality, present
                   when ``"quality_pair"`` is in ``requires``;
  ``manipulation`` int64 (N,): 0 = real, 1..5 = DF, F2F, FS, NT, FSH
                   (``benchmark.data.layout.FOLDERS`` order), present when
                   ``"manipulation_label"`` is in ``requires``.

``forward(batch)`` returns a dict with at least ``"logit"`` (N,): the fake
logit, so ``sigmoid(logit)`` is P(fake). ``loss(out, batch)`` returns a dict of
named scalar terms with their weighted sum under ``"loss"``.
``forward`` may also return ``"feature"`` (N, D): the feature the head reads (the fused
feature for DPL); ``features(batch)`` returns it (override when forward cannot include it) and
the t-SNE plot uses it; ``None`` skips the method there. ``cam_layer()`` names the module whose
activations and gradients Grad-CAM reads (a spatial feature map); ``None`` (the default) skips
the method in the Grad-CAM figure.
``train_step(batch, optim_wrapper)`` performs one optimisation step and returns
those terms; the default is forward, loss, ``optim_wrapper.update_params(loss)``.
A method whose step is special (e.g. adversarial weight perturbation) overrides
it; ``optim_wrapper`` is mmengine's ``OptimWrapper`` (``update_params``,
``backward``, ``step``, ``zero_grad``, ``optimizer``).
``on_train_iter(iteration, max_iters, iters_per_epoch)`` is called by the engine before every
training iteration of a stage (0-based ``iteration`` within the stage); a method whose schedule
follows training progress (UIA-ViT's progressive assembly and Gaussian refits) keeps what it
needs; the default does nothing. Outside the engine (tests) it is never called.

A method trained in several stages (DPL's stage I and II) declares
``training_stages(epochs)`` -> [(name, epochs)], ``set_stage(name)`` and
``stage_checkpoint(name)``; the engine runs one Runner per stage (engine.run_stages).
A method's own options may fix parts of how it is trained: ``recipe_overrides(stage)``
(optimiser etc. of one stage, whatever ``train.recipe`` says), ``train_options()`` (params.yaml
``train`` keys such as ``views``); ``set_epoch(epoch)`` is called before every training epoch.

``reused_stage(options, other)`` (a classmethod, no model is built) names the last training
stage that a model built with ``options`` shares with one built with ``other``: the pipeline
takes that checkpoint as the model when it is the last stage (DPL without stage II is DPL after
stage I), or takes the stages up to it and trains only the rest (DPL with other stage-II
options, ``engine.adopt``); ``None`` (the default) means it must be trained itself.

``outputs`` names what ``forward`` returns beyond ``logit`` that the pipeline uses (e.g.
``step_logits``: the ``analyze`` stage runs for such methods); tests check the claim.

Capabilities the engine provides on request are named in ``requires``; generic
code checks capabilities, never a method's name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Method(nn.Module):
    requires: frozenset[str] = frozenset()
    outputs: frozenset[str] = frozenset()
    #: the original's optimiser/schedule/batch size/epochs (``stage_recipe``; ``engine.optim``)
    recipe: dict = {}

    def __init__(self):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def use_input_stats(self, backbone: nn.Module) -> None:
        """Normalise inputs with ``backbone``'s own mean/std (its timm data config,
        ``benchmark.backbones.input_stats``) instead of the ImageNet default."""
        from benchmark.backbones import input_stats
        mean, std = input_stats(backbone)
        self.pixel_mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
        self.pixel_std.copy_(torch.tensor(std).view(1, 3, 1, 1))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.pixel_mean) / self.pixel_std

    # forward(batch) -> {"logit": (N,), ...} is each subclass's own (nn.Module
    # refuses to run a module that lacks one).

    def loss(self, out: dict, batch: dict) -> dict:
        """Default objective: binary cross-entropy on the fake logit."""
        bce = F.binary_cross_entropy_with_logits(out["logit"], batch["label"].float())
        return {"loss": bce, "bce": bce}

    def train_step(self, batch: dict, optim_wrapper) -> dict:
        """One optimisation step on ``batch``; returns the loss terms (see module docstring)."""
        losses = self.loss(self(batch), batch)
        optim_wrapper.update_params(losses["loss"])
        return losses

    def check_input_size(self, size: int) -> None:
        """Refuse (``UserError``, naming the option to set) a crop side this model cannot take;
        the preflight calls it with ``extract.size`` before any stage starts. Default: any side."""

    def on_train_iter(self, iteration: int, max_iters: int, iters_per_epoch: int) -> None:
        """Training progress before each iteration (see the module docstring); default: ignored."""

    def stage_recipe(self, stage: str) -> dict:
        """The original's training recipe for ``stage`` (used under ``train.recipe: own``): any of
        ``benchmark.engine.optim.RECIPE_KEYS``; keys it leaves out come from params.yaml ``train``."""
        return dict(self.recipe)

    def recipe_overrides(self, stage: str) -> dict:
        """Recipe keys this model's own options fix for ``stage`` under either ``train.recipe``
        (e.g. DPL's ``stage2_optimizer``); default none."""
        return {}

    def train_options(self) -> dict:
        """params.yaml ``train`` keys this model's own options fix for its whole training (e.g.
        ``views``); the pipeline applies them over params.yaml's. Default none."""
        return {}

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine before every training epoch (0-based within the stage); default nothing."""

    def training_stages(self, epochs: int) -> list[tuple[str, int]]:
        """The training schedule as (stage name, epochs); default one stage of ``train.epochs``."""
        return [("train", int(epochs))]

    def set_stage(self, stage: str) -> None:
        """Prepare ``stage``: freeze what it does not train, switch its objective (default: nothing)."""

    def stage_checkpoint(self, stage: str) -> int | str | None:
        """Which checkpoint of the previous stage ``stage`` starts from: an epoch number, ``last``
        or ``best_val``; None = the one ``train.select`` names."""
        return None

    @classmethod
    def reused_stage(cls, options: dict, other: dict) -> str | None:
        """The last stage S up to which training with ``options`` is training with ``other``
        options, or None (train everything). When S is this method's last stage, the checkpoint
        at its end is the model; otherwise the pipeline takes the stages up to S from that
        training and trains the rest (``engine.adopt``). Both are resolved params.yaml entries."""
        return None

    def provenance(self) -> dict:
        """What a report must say about this model (backbone, weights)."""
        return {}

    def features(self, batch: dict) -> torch.Tensor | None:
        """(N, D) features the head reads, for the t-SNE plot; None when not available."""
        return self(batch).get("feature")

    def cam_layer(self) -> nn.Module | None:
        """The module Grad-CAM hooks (its output is a spatial map); None skips the method."""
        return None


def last_feature_map(backbone: nn.Module) -> nn.Module | None:
    """A timm model's last feature stage (from its ``feature_info``), for Grad-CAM."""
    info = getattr(backbone, "feature_info", None)
    if not info:
        return None
    last = info[-1]
    name = last["module"] if isinstance(last, dict) else getattr(last, "module", None)
    return backbone.get_submodule(name) if name else None
