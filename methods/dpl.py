"""DPL: Dual Progressive Learning, both training stages.

Paper: D. Zhang, Y. Li, J. Zhou, Y. Li, "DPL: Cross-quality DeepFake Detection via Dual
Progressive Learning", ACCV 2024; section 3 (DESIGN.md section 7 lists the ambiguities).

Mechanism kept: a shared backbone Psi gives f (N,c,h,w); the Feature Selection Module (FSM)
makes f_1 = f, f_{t+1} = f_t - M_t * avgpool(f_t) with M_t = 0 on channels [l_t, l_t+delta)
and 1 elsewhere; two GRUs read avgpool(f_t): P1 (VQPL) runs k1 = vqi_level steps, P2 (FIPL)
runs k2 = fii_level steps; f_VQ = sum_t h_t, f_FI = sum_t w_t; fusion (add | concat | AFF);
a linear head gives one fake logit. Stage I: l_t uniform (the "randomizer"), loss = focal
cross-entropy + lreg_weight * L_REG (Eq. 2). Stage II: Phi (a GRU over avgpool(f_t) giving
mu_t, sigma_t; l_t ~ N(mu_t, sigma_t) scaled to a window start) and the value network V are
trained with PPO (Eq. 4-6, methods/_ppo.py); everything else is frozen (BatchNorm included).

Default backbone: ``resnet10t`` at 64 px in params.yaml (embedded default); the paper's is
ConvNeXt-T at 224 px (profiles/paper.yaml).

Schedule: ``training_stages(epochs)`` = [("I", train.epochs), ("II", stage2_epochs)]; the paper
trains 5 + 5 (profile paper: train.epochs 5, stage2_epochs 5). stage2_epochs = 0 is Tab. 5's
"w/o train stage II" (no Phi, no V: uniform positions at test time too); in a pipeline that
also trains the full DPL, that row is DPL's own last stage-I checkpoint (``reused_stage``), so
the two rows differ by stage II alone. Stage II starts from the last stage-I epoch, or the
epoch ``stage1_checkpoint`` names.

Ambiguities, each a parameter (paper reading as default):
- Eq. (1) logit scale and equal-frequency vs fixed bins: ``indicators.logit_scale`` (false)
  and ``indicators.binning`` (quantile) in params.yaml (benchmark/indicators).
- L_REG sign (``lreg_sign``): +1 = Eq. (2) as printed (minimising lowers hard samples' step
  entropy); -1 = the text's "defer decisions" (raise it). Steps: ``lreg_steps`` (Tab. 8).
- Hard sample (``hard_samples``): ``final`` = misclassified by the final prediction (the
  text: "samples often misclassified"); ``step`` = a selected step counts where that step's
  own prediction is wrong.
- Per-step prediction (``step_prediction``): ``cumulative`` = head(fusion(sum_{s<=t} h_s,
  sum_{s<=t} w_s)), so the last effective step equals the final logit; ``hidden`` =
  head(fusion(h_t, w_t)) of the current hidden states only.
- PPO: ``ppo_return`` total (the text: "sum of rewards at all steps") or to_go;
  ``ppo_clip_form`` schulman (min(ratio*A, clip*A), PPO as cited) or printed
  (min(ratio, clip)*A as typeset); eps ``ppo_eps`` 0.2; ``ppo_epochs`` updates per batch with
  Phi' = Phi before the batch's first update.

Deviations:
- l_t is clamped to [0, 1] and scaled to an integer start in {0..c-delta}, so the window fits
  inside the c channels (the paper scales to [0, c] and leaves the overflow unspecified).
  delta = round(c*delta_frac). At test time Phi (when stage II exists) gives l_t = mu_t
  (``policy_eval_sample`` false); without stage II the randomizer draws one EVAL_SEED sequence
  shared by the batch, so a score never depends on batch size or order.
- The GRUs and Phi only see avgpool(f_t); since M_t is constant over (h, w) the FSM runs on
  the pooled (N, c) tensor. ``fsm_recursive: true`` as printed; false uses f_{t+1} =
  f_1 - M_t * avgpool(f_1) (with the printed recursion, the surviving channels are the
  intersection of all windows so far, often empty after 2-3 steps).
- Variable steps: all k steps run for the whole batch; past its level a branch's state is
  frozen (torch.where) and excluded from the sums: no per-sample Python loop.
- L_REG is averaged over the batch and over a sample's selected steps (paper: a sum).
- Eq. (6) weights: ``value_weight`` 1 as printed; ``entropy_weight`` 0.01 instead of 1
  (with weight 1 the Gaussian entropy term, unbounded in sigma, dominates rewards of size
  ~0.01 and drives Phi to a flat policy); Phi's width ``policy_hidden`` is not in the paper.
- Tab. 9 (``image_features``: concat_psi | add_psi | add_branches): the CLIP image tower
  from ``clip_weights`` (a local open_clip checkpoint of ``clip_model``, e.g. the file given
  to ``indicators.weights``, so detector and indicator share one CLIP); without weights a
  frozen random-init conv encoder stands in and ``provenance()`` says "stand-in, not CLIP".
- Focal loss without the alpha weight; Psi is timm's model with ``num_classes=0,
  global_pool=''``; ``backbone_kwargs`` go to timm (e.g. a 64-px Swin); random init unless
  ``pretrained`` is a file.
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from methods._dpl_parts import (EVAL_SEED, AttentionalFusion, GaussianPositions, OpenCLIPImageEncoder,  # noqa: F401
                                StandInImageEncoder, UniformPositions, ValueNet, fsm_step, gap, window_mask)
from methods._losses import LREG_STEPS, entropy_regulariser, focal_bce_with_logits, hard_sample_mask, lreg_step_mask
from methods._ppo import CLIP_FORMS, RETURNS, ppo_objective, returns, step_rewards
from benchmark.backbones import backbone_weights, create_backbone

FUSIONS = ("add", "concat", "attention")
HARD = ("final", "step")
STEP_PREDICTIONS = ("cumulative", "hidden")
IMAGE_FEATURES = ("none", "concat_psi", "add_psi", "add_branches")


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise UserError(f"methods.dpl.{name}={value!r} is unknown; choose one of: {', '.join(options)}")


def _as_channels_first(f: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """timm features to (N, c, ...): NHWC models (Swin) and token sequences (ViT) are permuted."""
    if f.dim() == 4 and getattr(model, "output_fmt", "NCHW") == "NHWC":
        return f.permute(0, 3, 1, 2)
    if f.dim() == 3:
        return f.transpose(1, 2)
    return f


#: options that act only in stage II (or on Phi at test time): DPL without stage II is DPL
#: trained with any values of these, taken after stage I (``DPL.reused_stage``)
STAGE2_OPTIONS = frozenset({"stage2_epochs", "stage1_checkpoint", "policy_hidden", "policy_eval_sample", "ppo_eps",
                            "ppo_epochs", "ppo_return", "ppo_clip_form", "value_weight", "entropy_weight"})


@METHODS.register_module(name="dpl")
class DPL(Method):
    paper_setting = {"backbone": "convnext_tiny"}  # the paper's ConvNeXt-T, 224 px (cost table)
    paper_input_size = 224
    requires = frozenset({"indicator_levels"})
    outputs = frozenset({"step_logits", "step_valid", "last_step", "positions", "actions", "fsm_pooled"})

    def __init__(self, backbone: str = "convnext_atto", pretrained: str | None = None, k: int = 5,
                 hidden: int = 256, delta_frac: float = 1 / 3, focal_gamma: float = 2.0,
                 lreg_weight: float = 1.0, lreg_sign: float = 1.0, lreg_steps: str = "all_up_to_last",
                 fusion: str = "add", use_vqpl: bool = True, use_fipl: bool = True,
                 fsm_recursive: bool = True, hard_samples: str = "final", step_prediction: str = "cumulative",
                 stage2_epochs: int = 5, stage1_checkpoint: str | int = "last", policy_hidden: int = 64,
                 policy_eval_sample: bool = False, ppo_eps: float = 0.2, ppo_epochs: int = 4,
                 ppo_return: str = "total", ppo_clip_form: str = "schulman", value_weight: float = 1.0,
                 entropy_weight: float = 0.01, image_features: str = "none", clip_model: str = "ViT-B-32",
                 clip_weights: str | None = None, backbone_kwargs: dict | None = None):
        super().__init__()
        for name, value, options in (("fusion", fusion, FUSIONS), ("lreg_steps", lreg_steps, LREG_STEPS),
                                     ("hard_samples", hard_samples, HARD), ("ppo_return", ppo_return, RETURNS),
                                     ("step_prediction", step_prediction, STEP_PREDICTIONS),
                                     ("ppo_clip_form", ppo_clip_form, CLIP_FORMS),
                                     ("image_features", image_features, IMAGE_FEATURES)):
            _choice(name, value, options)
        if float(lreg_sign) not in (1.0, -1.0):
            raise UserError(f"methods.dpl.lreg_sign={lreg_sign!r} must be 1 or -1")
        if not (use_vqpl or use_fipl):
            raise UserError("methods.dpl: use_vqpl and use_fipl are both false; keep at least one branch")
        if int(k) < 1 or not 0 < float(delta_frac) <= 1:
            raise UserError(f"methods.dpl: need k >= 1 and 0 < delta_frac <= 1 (got k={k}, delta_frac={delta_frac})")
        if int(stage2_epochs) < 0 or not (stage1_checkpoint == "last" or isinstance(stage1_checkpoint, int)):
            raise UserError(f"methods.dpl: stage2_epochs must be >= 0 and stage1_checkpoint 'last' or an epoch "
                            f"number (got {stage2_epochs}, {stage1_checkpoint!r})")
        self.backbone_name, self.k, self.hidden = backbone, int(k), int(hidden)
        self.focal_gamma, self.lreg_weight, self.lreg_sign = float(focal_gamma), float(lreg_weight), float(lreg_sign)
        self.lreg_steps, self.fusion, self.fsm_recursive = lreg_steps, fusion, bool(fsm_recursive)
        self.use_vqpl, self.use_fipl = bool(use_vqpl), bool(use_fipl)
        self.hard_samples, self.step_prediction = hard_samples, step_prediction
        self.stage2_epochs, self.stage1_checkpoint = int(stage2_epochs), stage1_checkpoint
        self.ppo = dict(eps=float(ppo_eps), form=ppo_clip_form, value_weight=float(value_weight),
                        entropy_weight=float(entropy_weight))
        self.ppo_epochs, self.ppo_return, self.image_features = int(ppo_epochs), ppo_return, image_features

        self.backbone = create_backbone(backbone, pretrained, num_classes=0, global_pool="",  # Psi
                                        **(backbone_kwargs or {}))
        self.weights = backbone_weights(self.backbone)
        self.use_input_stats(self.backbone)
        c = self.backbone.num_features
        self._encoder, self.encoder_desc = [], "none"  # a list keeps the frozen encoder out of state_dict
        if image_features != "none":
            enc = OpenCLIPImageEncoder(clip_model, clip_weights) if clip_weights else StandInImageEncoder()
            self._encoder.append(enc.eval())
            self.encoder_desc = (f"open_clip {clip_model} ({clip_weights})" if clip_weights
                                 else "stand-in, not CLIP: frozen random-init conv encoder (no clip_weights)")
            if image_features == "concat_psi":
                c += enc.dim
            self.image_proj = nn.Linear(enc.dim, c if image_features == "add_psi" else self.hidden) \
                if image_features != "concat_psi" else None
        self.channels = c
        self.delta = min(max(round(c * float(delta_frac)), 1), c)
        self.uniform = UniformPositions(c - self.delta + 1)
        if self.stage2_epochs > 0:  # Phi and V exist only when stage II trains them
            self.policy = GaussianPositions(c, c - self.delta + 1, int(policy_hidden), eval_sample=policy_eval_sample)
            self.value = ValueNet(c, int(policy_hidden))
        self.gru_vq = nn.GRUCell(c, self.hidden) if self.use_vqpl else None  # P1
        self.gru_fi = nn.GRUCell(c, self.hidden) if self.use_fipl else None  # P2
        n_branches = int(self.use_vqpl) + int(self.use_fipl)
        self.aff = AttentionalFusion(self.hidden) if fusion == "attention" and n_branches == 2 else None
        self.head = nn.Linear(self.hidden * (n_branches if fusion == "concat" else 1), 1)
        self.set_stage("I")

    # -- schedule (engine contract, benchmark/method.py) -----------------------------------
    def training_stages(self, epochs: int) -> list[tuple[str, int]]:
        return [("I", int(epochs))] + ([("II", self.stage2_epochs)] if self.stage2_epochs > 0 else [])

    def stage_checkpoint(self, stage: str):
        return None if stage == "I" or self.stage1_checkpoint == "last" else int(self.stage1_checkpoint)

    @classmethod
    def reused_stage(cls, options: dict, other: dict) -> str | None:
        """Without stage II, a model is the stage-I result of a DPL that differs only in stage-II
        options (Tab. 5's "w/o Train Stage II" reuses DPL's stage-I checkpoint)."""
        differ = {k for k in {*options, *other} if options.get(k) != other.get(k)}
        if int(options.get("stage2_epochs", 5)) == 0 < int(other.get("stage2_epochs", 5)) and differ <= STAGE2_OPTIONS:
            return "I"
        return None

    def set_stage(self, stage: str) -> None:
        """I: train all but Phi and V; II: train only Phi and V (the rest frozen, BN in eval)."""
        self.stage = stage
        trained = ("policy.", "value.")
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith(trained) == (stage == "II"))
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.stage == "II":
            for name, child in self.named_children():
                if name not in ("policy", "value"):
                    child.eval()
        return self

    @property
    def positions(self) -> nn.Module:
        """Phi in stage II and, when it exists, at test time; the uniform randomizer otherwise."""
        has_phi = self.stage2_epochs > 0
        return self.policy if has_phi and (self.stage == "II" or not self.training) else self.uniform

    # -- forward ---------------------------------------------------------------------------
    def _levels(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "vqi_level" not in batch or "fii_level" not in batch:
            raise UserError("method dpl needs the indicator levels (vqi_level, fii_level) in every batch")
        levels = torch.stack([batch["vqi_level"], batch["fii_level"]]).long()
        lo, hi = int(levels.min()), int(levels.max())
        if lo < 1 or hi > self.k:
            raise UserError(f"indicator levels span {lo}..{hi} but methods.dpl.k={self.k}; "
                            "set methods.dpl.k equal to indicators.k")
        return levels[0], levels[1]

    def _fuse(self, parts: list[torch.Tensor]) -> torch.Tensor:
        if self.fusion == "concat":
            return torch.cat(parts, dim=-1)
        if self.aff is not None:
            return self.aff(*parts)
        return torch.stack(parts).sum(0)

    def _features(self, batch: dict):
        f1 = gap(_as_channels_first(self.backbone(self.normalize(batch["image"])), self.backbone))
        extra = None
        if self._encoder:
            enc = self._encoder[0].to(f1.device)
            with torch.no_grad():
                clip = enc(batch["image"])
            if self.image_features == "concat_psi":
                f1 = torch.cat([f1, clip], dim=1)
            elif self.image_features == "add_psi":
                f1 = f1 + self.image_proj(clip)
            else:
                extra = self.image_proj(clip)
        return f1, extra

    def forward(self, batch: dict) -> dict:
        k1, k2 = self._levels(batch)
        f1, extra = self._features(batch)  # the FSM acts on pooled features (see module docstring)
        n = f1.shape[0]
        branches = [(gru, lv) for gru, lv in ((self.gru_vq, k1), (self.gru_fi, k2)) if gru is not None]
        states = [f1.new_zeros(n, self.hidden) for _ in branches]
        sums = [f1.new_zeros(n, self.hidden) for _ in branches]
        per_step, pooled_seq, starts, actions = [], [], [], []
        x, sampler_state = f1, self.positions.init_state(f1)
        for t in range(1, self.k + 1):
            if t > 1:  # FSM: f_t from f_{t-1} and a window start l_{t-1}
                start, sampler_state, action = self.positions(x, sampler_state)
                starts.append(start)
                actions.append(action)
                x = fsm_step(x, f1, window_mask(start, self.channels, self.delta), self.fsm_recursive)
            pooled_seq.append(x)
            for i, (gru, level) in enumerate(branches):
                valid = (t <= level).unsqueeze(1)
                states[i] = torch.where(valid, gru(x, states[i]), states[i])  # frozen past the level
                sums[i] = sums[i] + torch.where(valid, states[i], torch.zeros_like(states[i]))
            parts = sums if self.step_prediction == "cumulative" else states
            if extra is not None:  # Tab. 9 "add to P1 and P2"
                parts = [p + extra for p in parts]
            per_step.append(self._fuse(parts))
        step_logits = self.head(torch.stack(per_step, dim=1)).squeeze(-1)  # (N, k)
        last = torch.stack([lv for _, lv in branches]).amax(0)
        step_valid = torch.arange(1, self.k + 1, device=last.device).unsqueeze(0) <= last.unsqueeze(1)
        logit = step_logits.gather(1, (last - 1).unsqueeze(1)).squeeze(1)
        positions = torch.stack(starts, 1) if starts else f1.new_zeros(n, 0, dtype=torch.long)
        actions = torch.stack(actions, 1) if actions else f1.new_zeros(n, 0)
        return {"logit": logit, "step_logits": step_logits, "step_valid": step_valid, "last_step": last,
                "positions": positions, "actions": actions, "fsm_pooled": torch.stack(pooled_seq, 1)}

    # -- objectives ------------------------------------------------------------------------
    def loss(self, out: dict, batch: dict) -> dict:
        label = batch["label"]
        focal = focal_bce_with_logits(out["logit"], label, self.focal_gamma)
        steps = lreg_step_mask(out["last_step"], self.k, self.lreg_steps)
        if self.hard_samples == "step":  # a selected step counts where its own prediction is wrong
            steps = steps * hard_sample_mask(out["step_logits"], label.unsqueeze(1).expand_as(steps))
            hard = steps.amax(1)
        else:
            hard = hard_sample_mask(out["logit"], label)
        lreg = self.lreg_sign * entropy_regulariser(out["step_logits"], steps, hard)
        return {"loss": focal + self.lreg_weight * lreg, "focal": focal, "lreg": lreg}

    def ppo_loss(self, out: dict, batch: dict, old_log_prob: torch.Tensor) -> dict:
        """Eq. (4)-(6) on a rollout ``out`` (computed without gradients) under the current Phi, V."""
        states, mask = out["fsm_pooled"][:, :-1], out["step_valid"][:, 1:]
        ret = returns(step_rewards(out["step_logits"], batch["label"], out["step_valid"]), self.ppo_return)
        log_prob, entropy = self.policy.evaluate(states, out["actions"])
        return ppo_objective(log_prob, old_log_prob, entropy, self.value(states), ret, mask, **self.ppo)

    def train_step(self, batch: dict, optim_wrapper) -> dict:
        if self.stage != "II":
            return super().train_step(batch, optim_wrapper)
        with torch.no_grad():  # rollout with Phi' (the policy before this batch's updates)
            out = self(batch)
            old_log_prob, _ = self.policy.evaluate(out["fsm_pooled"][:, :-1], out["actions"])
        for _ in range(self.ppo_epochs):
            losses = self.ppo_loss(out, batch, old_log_prob)
            optim_wrapper.update_params(losses["loss"])
        return losses

    def provenance(self) -> dict:
        branches = [b for b, on in (("VQPL", self.use_vqpl), ("FIPL", self.use_fipl)) if on]
        stage = "I + II (PPO-trained Phi)" if self.stage2_epochs else "I only (uniform FSM positions)"
        return {"backbone": self.backbone_name, "weights": self.weights, "variant": {
            "stages": stage, "k": self.k, "hidden": self.hidden,
            "delta": f"{self.delta}/{self.channels}", "fsm_recursive": self.fsm_recursive,
            "branches": "+".join(branches), "fusion": self.fusion, "focal_gamma": self.focal_gamma,
            "lreg": {"weight": self.lreg_weight, "sign": self.lreg_sign, "steps": self.lreg_steps,
                     "hard_samples": self.hard_samples}, "step_prediction": self.step_prediction,
            "image_features": self.image_features, "image_encoder": self.encoder_desc}}

    # -- analysis hooks of the Method interface (t-SNE features, Grad-CAM layer) ------------
    def features(self, batch: dict) -> torch.Tensor:
        """The final fused feature (f_VQ + f_FI for ``add``): the head's input at the last step."""
        seen = []
        handle = self.head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            self(batch)
        finally:
            handle.remove()
        return seen[0][:, -1]

    def cam_layer(self):
        from benchmark.method import last_feature_map
        return last_feature_map(self.backbone)
