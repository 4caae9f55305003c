"""DPL: Dual Progressive Learning, both training stages.

Paper: D. Zhang, Y. Li, J. Zhou, Y. Li, "DPL: Cross-quality DeepFake Detection via Dual
Progressive Learning", ACCV 2024; section 3 (DESIGN.md section 7 lists the ambiguities).

Mechanism kept: a shared backbone Psi gives f (N,c,h,w); the Feature Selection Module (FSM)
makes f_1 = f, f_{t+1} = f_t - M_t * avgpool(f_t) with M_t = 0 on channels [l_t, l_t+delta)
and 1 elsewhere; two GRUs read avgpool(f_t): P1 (VQPL) runs k1 = vqi_level steps, P2 (FIPL)
runs k2 = fii_level steps; their states are aggregated over the steps into f_VQ and f_FI and
fused (add | concat | AFF); a linear head gives one fake logit. Stage I: l_t uniform (the
"randomizer"), loss = focal cross-entropy + lreg_weight * L_REG (Eq. 2). Stage II: Phi (a GRU
over avgpool(f_t) giving l_t ~ N(mu_t, sigma_t), scaled to a window start) and the value network
V are trained with PPO (Eq. 4-6, methods/_ppo.py); everything else is frozen (BatchNorm included).

Readings (``reading``): ``release`` (default; the code that produced the published numbers)
or ``paper`` (the text read literally). The preset sets aggregation, per-branch projection,
hidden size, L_REG (sign, steps, normalisation), test-time positions, every stage-II
difference (returns, updates, weights, sigma, trunk, log-probability, reward branch, optimiser,
starting checkpoint) and the batch composition; methods/_dpl_readings.py documents each with
both readings. An option given explicitly (not null) wins; ``provenance()`` names the reading
and every explicit difference, and every table shows it.

Default backbone: ``resnet10t`` at 64 px in params.yaml (embedded default); the paper's is
ConvNeXt-T at 224 px (profiles/paper.yaml).

Schedule: ``training_stages(epochs)`` = [("I", train.epochs), ("II", stage2_epochs)]; the paper
trains 5 + 5 (profile paper: train.epochs 5, stage2_epochs 5). stage2_epochs = 0 is Tab. 5's
"w/o train stage II" (no Phi, no V: uniform positions at test time too); in a pipeline that
also trains the full DPL, that row is DPL's own stage-I checkpoint (``reused_stage``), so the
two rows differ by stage II alone. ``stage_recipe`` (``train.recipe: own``): Adam 5e-5,
5 stage-I epochs; batch 32 and stage II at 5e-5 (paper), batch 16 and stage II at Adam 3e-4
(release; its stage-I optimiser is taken to be the paper's).

Other ambiguities, each a parameter (not part of the reading: the text and the release agree
or the release is not known to differ):
- Eq. (1) logit scale and the binning: ``indicators.*`` (benchmark/indicators).
- Hard sample (``hard_samples``): ``final`` = the final prediction's CE > ln 2 (misclassified);
  ``step`` = a selected step counts where that step's own prediction is wrong.
- Per-step prediction (``step_prediction``): ``cumulative`` = head(fusion of the aggregates up
  to t), so the last effective step equals the final logit; ``hidden`` = head(fusion(h_t, w_t)).
- PPO clip range ``ppo_eps`` 0.2; Phi' = Phi before a batch's first update.
- ``fsm_recursive``: true as printed; false uses f_{t+1} = f_1 - M_t * avgpool(f_1) (with the
  printed recursion the surviving channels are the intersection of all windows so far, empty
  in 25-69 % of draws at steps 3-5 with delta = c/3, when the pooled input is exactly zero).

Deviations (choices of this implementation, under both readings):
- l_t is clamped to [0, 1] and scaled to an integer start in {0..c-delta}, so the window fits
  inside the c channels (the paper scales to [0, c] and leaves the overflow unspecified).
  delta = round(c*delta_frac). At test time Phi (when stage II exists) gives l_t = mu_t
  (``policy_eval_sample`` false); the stage-I randomizer at test time is seeded (EVAL_SEED).
- The GRUs and Phi only see avgpool(f_t); since M_t is constant over (h, w) the FSM runs on
  the pooled (N, c) tensor (exactly the pooled spatial FSM; tests/test_dpl.py).
- Variable steps: all k steps run for the whole batch; past its level a branch's state is
  frozen (torch.where) and excluded from the aggregate: no per-sample Python loop.
- h_0 = w_0 = 0 and Phi's g_0 = 0 (the paper names h_0 the initial state without a value).
- L_REG averages the entropies of a sample's selected steps (Eq. 2 does not say how several
  steps combine), so a hard sample weighs at most ln 2 in every Tab. 8 setting.
- Phi's width ``policy_hidden`` and sigma's floor (``state``: 0.02) are not in the paper; the
  reward of a branch alone (``reward_branch: alternate``) is head(fusion of that branch's
  aggregate with itself), since the release's per-branch classifier is not known here.
- Focal loss without the alpha weight; Psi is timm's model with ``num_classes=0,
  global_pool=''``; ``backbone_kwargs`` go to timm; random init unless ``pretrained`` is a file.
- The release's balanced batches (a random real per fake) are the engine's sampler, not an
  option here; its CLIP-IQA+ VQI is not available offline (benchmark/indicators).
- Tab. 9 (``image_features``: concat_psi | add_psi | add_branches): the CLIP image tower from
  ``clip_weights``; without weights a frozen random-init conv encoder stands in, and
  ``provenance()`` says "stand-in, not CLIP".
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.backbones import backbone_weights, create_backbone
from benchmark.errors import UserError
from benchmark.method import Method
from benchmark.registry import METHODS
from methods import _dpl_readings as readings
from methods._dpl_parts import (EVAL_SEED, AttentionalFusion, GaussianPositions, ImageFeatures,  # noqa: F401
                                UniformPositions, ValueNet, as_channels_first, fsm_step, gap, window_mask)
from methods._losses import LREG_STEPS, entropy_regulariser, focal_bce_with_logits, hard_sample_mask, lreg_step_mask
from methods._ppo import CLIP_FORMS, RETURNS, ppo_objective, returns, step_rewards

FUSIONS = ("add", "concat", "attention")
HARD = ("final", "step")
STEP_PREDICTIONS = ("cumulative", "hidden")
IMAGE_FEATURES = ("none", "concat_psi", "add_psi", "add_branches")
assert set(LREG_STEPS) == set(readings.CHOICES["lreg_steps"]) and set(CLIP_FORMS) == set(readings.CHOICES["ppo_clip_form"])
assert set(RETURNS) == set(readings.CHOICES["ppo_return"])


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise UserError(f"methods.dpl.{name}={value!r} is unknown; choose one of: {', '.join(options)}")


#: options that act only in stage II (or on Phi at test time): DPL without stage II is DPL
#: trained with any values of these, taken after stage I (``DPL.reused_stage``)
STAGE2_OPTIONS = frozenset({"stage2_epochs", "stage1_checkpoint", "policy_hidden", "policy_eval_sample", "ppo_eps",
                            "ppo_epochs", "ppo_return", "ppo_clip_form", "value_weight", "entropy_weight",
                            "ppo_gamma", "ppo_normalize", "policy_sigma", "policy_trunk", "ppo_logprob",
                            "reward_branch", "stage2_optimizer"})


@METHODS.register_module(name="dpl")
class DPL(Method):
    paper_setting = {"backbone": "convnext_tiny"}  # the paper's ConvNeXt-T, 224 px (cost table)
    paper_input_size = 224
    requires = frozenset({"indicator_levels"})
    outputs = frozenset({"step_logits", "step_valid", "last_step", "positions", "actions", "fsm_pooled"})

    def __init__(self, backbone: str = "convnext_atto", pretrained: str | None = None, reading: str = "release",
                 k: int = 5, delta_frac: float = 1 / 3, focal_gamma: float = 2.0, lreg_weight: float = 1.0,
                 fusion: str = "add", use_vqpl: bool = True, use_fipl: bool = True, fsm_recursive: bool = True,
                 hard_samples: str = "final", step_prediction: str = "cumulative", stage2_epochs: int = 5,
                 policy_hidden: int = 64, policy_eval_sample: bool = False, ppo_eps: float = 0.2,
                 image_features: str = "none", clip_model: str = "ViT-B-32", clip_weights: str | None = None,
                 backbone_kwargs: dict | None = None, *,
                 # reading options (methods/_dpl_readings.py): None = the value of ``reading``
                 aggregation: str | None = None, branch_projection: bool | None = None,
                 hidden: int | str | None = None, lreg_sign: float | None = None, lreg_steps: str | None = None,
                 lreg_norm: str | None = None, eval_positions: str | None = None, ppo_return: str | None = None,
                 ppo_gamma: float | None = None, ppo_normalize: bool | None = None, ppo_epochs: int | None = None,
                 ppo_clip_form: str | None = None, value_weight: float | None = None,
                 entropy_weight: float | None = None, policy_sigma: str | None = None,
                 policy_trunk: str | None = None, ppo_logprob: str | None = None, reward_branch: str | None = None,
                 stage2_optimizer: str | dict | None = None, stage1_checkpoint: str | int | None = None,
                 views: str | None = None, sampler: str | None = None):
        given = {k: v for k, v in locals().items() if k in readings.KEYS}
        super().__init__()
        opts, self.explicit = readings.resolve(reading, given)
        readings.check(opts)
        for name, value, options in (("fusion", fusion, FUSIONS), ("hard_samples", hard_samples, HARD),
                                     ("step_prediction", step_prediction, STEP_PREDICTIONS),
                                     ("image_features", image_features, IMAGE_FEATURES)):
            _choice(name, value, options)
        if not (use_vqpl or use_fipl):
            raise UserError("methods.dpl: use_vqpl and use_fipl are both false; keep at least one branch")
        if int(k) < 1 or not 0 < float(delta_frac) <= 1 or int(stage2_epochs) < 0:
            raise UserError(f"methods.dpl: need k >= 1, 0 < delta_frac <= 1 and stage2_epochs >= 0 "
                            f"(got k={k}, delta_frac={delta_frac}, stage2_epochs={stage2_epochs})")
        self.reading, self.opts = reading, opts
        self.backbone_name, self.k = backbone, int(k)
        self.focal_gamma, self.lreg_weight = float(focal_gamma), float(lreg_weight)
        self.fusion, self.fsm_recursive = fusion, bool(fsm_recursive)
        self.use_vqpl, self.use_fipl = bool(use_vqpl), bool(use_fipl)
        self.hard_samples, self.step_prediction = hard_samples, step_prediction
        self.stage2_epochs, self.image_features = int(stage2_epochs), image_features
        self.ppo = dict(eps=float(ppo_eps), form=opts["ppo_clip_form"], value_weight=float(opts["value_weight"]),
                        entropy_weight=float(opts["entropy_weight"]))
        self._epoch = 0

        self.backbone = create_backbone(backbone, pretrained, num_classes=0, global_pool="",  # Psi
                                        **(backbone_kwargs or {}))
        self.weights = backbone_weights(self.backbone)
        self.use_input_stats(self.backbone)
        self.image = ImageFeatures(image_features, clip_model, clip_weights) if image_features != "none" else None
        c = self.image.channels(self.backbone.num_features) if self.image else self.backbone.num_features
        hidden = c if opts["hidden"] == "channels" else int(opts["hidden"])
        if self.image:
            self.image.build(c, hidden)
        self.channels, self.hidden = c, hidden
        self.delta = min(max(round(c * float(delta_frac)), 1), c)
        self.uniform = UniformPositions(c - self.delta + 1, per_sample=opts["eval_positions"] == "per_sample")
        if self.stage2_epochs > 0:  # Phi and V exist only when stage II trains them
            shared = opts["policy_trunk"] == "shared"
            self.policy = GaussianPositions(c, c - self.delta + 1, int(policy_hidden), eval_sample=policy_eval_sample,
                                            sigma=opts["policy_sigma"], value_head=shared,
                                            clamp_action=opts["ppo_logprob"] == "clamped")
            self.value = None if shared else ValueNet(c, int(policy_hidden))
        self.gru_vq = nn.GRUCell(c, hidden) if self.use_vqpl else None  # P1
        self.gru_fi = nn.GRUCell(c, hidden) if self.use_fipl else None  # P2
        n_branches = int(self.use_vqpl) + int(self.use_fipl)
        proj = opts["branch_projection"]  # one 1x1 conv (= Linear on the pooled f_t) per branch, steps 2..k
        self.proj_vq = nn.Linear(c, c) if proj and self.use_vqpl else None
        self.proj_fi = nn.Linear(c, c) if proj and self.use_fipl else None
        self.aff = AttentionalFusion(hidden) if fusion == "attention" and n_branches == 2 else None
        self.head = nn.Linear(hidden * (n_branches if fusion == "concat" else 1), 1)
        self.set_stage("I")

    # -- schedule and recipe (engine contract, benchmark/method.py) -------------------------
    def training_stages(self, epochs: int) -> list[tuple[str, int]]:
        return [("I", int(epochs))] + ([("II", self.stage2_epochs)] if self.stage2_epochs > 0 else [])

    def stage_checkpoint(self, stage: str):
        pick = self.opts["stage1_checkpoint"]
        return None if stage == "I" or pick == "select" else pick

    def stage_recipe(self, stage: str) -> dict:
        paper = self.reading == "paper"
        lr = 5e-5 if stage == "I" or paper else 3e-4
        return {"optimizer": {"type": "Adam", "lr": lr}, "batch_size": 32 if paper else 16,
                **({"epochs": 5} if stage == "I" else {})}

    def recipe_overrides(self, stage: str) -> dict:
        opt = self.opts["stage2_optimizer"]
        return {"optimizer": dict(opt)} if stage == "II" and isinstance(opt, dict) else {}

    def train_options(self) -> dict:
        return {k: self.opts[k] for k in ("views", "sampler") if self.opts[k] != "train"}

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    @classmethod
    def reused_stage(cls, options: dict, other: dict) -> str | None:
        """A DPL that differs from ``other`` only in stage-II options trains stage I as ``other``
        does: without stage II its model is that stage-I result (Tab. 5's "w/o Train Stage II"),
        with one it trains only stage II, from ``other``'s stage I (``engine.adopt``) -- unless
        its stage II starts from an epoch number, which ``other`` did not keep (it keeps its last
        and best-validation stage-I checkpoints), or ``other`` has no stage II (then no stage-I dir)."""
        differ = {k for k in {*options, *other} if options.get(k) != other.get(k)}
        if not differ <= STAGE2_OPTIONS or int(other.get("stage2_epochs", 5)) == 0:
            return None
        if int(options.get("stage2_epochs", 5)) > 0 and isinstance(options.get("stage1_checkpoint"), int):
            return None
        return "I"

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
        stacked = torch.stack(parts)
        return stacked.mean(0) if self.opts["aggregation"] == "mean" else stacked.sum(0)

    def _features(self, batch: dict):
        f1 = gap(as_channels_first(self.backbone(self.normalize(batch["image"])), self.backbone))
        return self.image(f1, batch["image"]) if self.image else (f1, None)

    def forward(self, batch: dict) -> dict:
        k1, k2 = self._levels(batch)
        f1, extra = self._features(batch)  # the FSM acts on pooled features (see module docstring)
        n, mean = f1.shape[0], self.opts["aggregation"] == "mean"
        branches = [(gru, lv, proj) for gru, lv, proj in ((self.gru_vq, k1, self.proj_vq), (self.gru_fi, k2, self.proj_fi))
                    if gru is not None]
        states = [f1.new_zeros(n, self.hidden) for _ in branches]
        aggs = [f1.new_zeros(n, self.hidden) for _ in branches]
        alone = self.opts["reward_branch"] == "alternate" and self.stage == "II"
        per_step, per_branch, pooled_seq, starts, actions = [], [], [], [], []
        x, sampler_state = f1, self.positions.init_state(f1)
        for t in range(1, self.k + 1):
            if t > 1:  # FSM: f_t from f_{t-1} and a window start l_{t-1}
                start, sampler_state, action = self.positions(x, sampler_state)
                starts.append(start)
                actions.append(action)
                x = fsm_step(x, f1, window_mask(start, self.channels, self.delta), self.fsm_recursive)
            pooled_seq.append(x)
            for i, (gru, level, proj) in enumerate(branches):
                inp = proj(x) if proj is not None and t > 1 else x
                valid = (t <= level).unsqueeze(1)
                states[i] = torch.where(valid, gru(inp, states[i]), states[i])  # frozen past the level
                step_agg = aggs[i] + (states[i] - aggs[i]) / t if mean else aggs[i] + states[i]  # t-th valid step
                aggs[i] = torch.where(valid, step_agg, aggs[i])
            parts = aggs if self.step_prediction == "cumulative" else states
            if extra is not None:  # Tab. 9 "add to P1 and P2"
                parts = [p + extra for p in parts]
            per_step.append(self._fuse(parts))
            if alone:
                per_branch.append(torch.stack([self._fuse([p] * len(parts)) for p in parts], 1))
        step_logits = self.head(torch.stack(per_step, dim=1)).squeeze(-1)  # (N, k)
        steps = torch.arange(1, self.k + 1, device=f1.device).unsqueeze(0)
        last = torch.stack([lv for _, lv, _ in branches]).amax(0)
        step_valid = steps <= last.unsqueeze(1)
        out = {"logit": step_logits.gather(1, (last - 1).unsqueeze(1)).squeeze(1), "step_logits": step_logits,
               "step_valid": step_valid, "last_step": last,
               "positions": torch.stack(starts, 1) if starts else f1.new_zeros(n, 0, dtype=torch.long),
               "actions": torch.stack(actions, 1) if actions else f1.new_zeros(n, 0),
               "fsm_pooled": torch.stack(pooled_seq, 1)}
        if alone:  # (N, B, k): each branch's own step predictions and valid steps
            out["branch_step_logits"] = self.head(torch.stack(per_branch, dim=2)).squeeze(-1)
            out["branch_step_valid"] = torch.stack([steps <= lv.unsqueeze(1) for _, lv, _ in branches], 1)
        return out

    # -- objectives ------------------------------------------------------------------------
    def loss(self, out: dict, batch: dict) -> dict:
        label = batch["label"]
        focal = focal_bce_with_logits(out["logit"], label, self.focal_gamma)
        steps = lreg_step_mask(out["last_step"], self.k, self.opts["lreg_steps"])
        if self.hard_samples == "step":  # a selected step counts where its own prediction is wrong
            steps = steps * hard_sample_mask(out["step_logits"], label.unsqueeze(1).expand_as(steps))
            hard = steps.amax(1)
        else:
            hard = hard_sample_mask(out["logit"], label)
        lreg = float(self.opts["lreg_sign"]) * entropy_regulariser(out["step_logits"], steps, hard,
                                                                    self.opts["lreg_norm"])
        return {"loss": focal + self.lreg_weight * lreg, "focal": focal, "lreg": lreg}

    def ppo_loss(self, out: dict, batch: dict, old_log_prob: torch.Tensor) -> dict:
        """Eq. (4)-(6) on a rollout ``out`` (computed without gradients) under the current Phi, V."""
        logits, valid = out["step_logits"], out["step_valid"]
        if "branch_step_logits" in out:  # the release: one branch's rewards per epoch, in turn
            b = self._epoch % out["branch_step_logits"].shape[1]
            logits, valid = out["branch_step_logits"][:, b], out["branch_step_valid"][:, b]
        states, mask = out["fsm_pooled"][:, :-1], valid[:, 1:]
        o = self.opts
        ret = returns(step_rewards(logits, batch["label"], valid), o["ppo_return"], o["ppo_gamma"],
                      o["ppo_normalize"], mask)
        log_prob, entropy, trunk_value = self.policy.evaluate(states, out["actions"])
        value = trunk_value if trunk_value is not None else self.value(states)
        return ppo_objective(log_prob, old_log_prob, entropy, value, ret, mask, **self.ppo)

    def train_step(self, batch: dict, optim_wrapper) -> dict:
        if self.stage != "II":
            return super().train_step(batch, optim_wrapper)
        with torch.no_grad():  # rollout with Phi' (the policy before this batch's updates)
            out = self(batch)
            old_log_prob = self.policy.evaluate(out["fsm_pooled"][:, :-1], out["actions"])[0]
        for _ in range(int(self.opts["ppo_epochs"])):
            losses = self.ppo_loss(out, batch, old_log_prob)
            optim_wrapper.update_params(losses["loss"])
        return losses

    def provenance(self) -> dict:
        branches = [b for b, on in (("VQPL", self.use_vqpl), ("FIPL", self.use_fipl)) if on]
        stage = "I + II (PPO-trained Phi)" if self.stage2_epochs else "I only (uniform FSM positions)"
        return {"backbone": self.backbone_name, "weights": self.weights,
                "setting": ", ".join([f"reading {self.reading}", *self.explicit]), "variant": {
                    "reading": self.reading, "explicit": self.explicit, "stages": stage, "k": self.k,
                    "hidden": self.hidden, "delta": f"{self.delta}/{self.channels}",
                    "fsm_recursive": self.fsm_recursive, "branches": "+".join(branches), "fusion": self.fusion,
                    "focal_gamma": self.focal_gamma, "lreg_weight": self.lreg_weight,
                    "hard_samples": self.hard_samples, "step_prediction": self.step_prediction,
                    "image_features": self.image_features, "image_encoder": self.image.desc if self.image else "none",
                    **self.opts}}

    # -- analysis hooks of the Method interface (t-SNE features, Grad-CAM layer) ------------
    def features(self, batch: dict) -> torch.Tensor:
        """The final fused feature (the head's input at the last step)."""
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
