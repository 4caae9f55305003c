"""DPL: Dual Progressive Learning, stage I (uniform feature selection).

Paper: D. Zhang, Y. Li, J. Zhou, Y. Li, "DPL: Cross-quality DeepFake Detection via Dual
Progressive Learning", ACCV 2024; section 3 (DESIGN.md section 7 lists the ambiguities).

Mechanism kept: a shared backbone Psi gives f (N,c,h,w); the Feature Selection Module (FSM)
makes f_1 = f, f_{t+1} = f_t - M_t * avgpool(f_t) with M_t = 0 on channels [l_t, l_t+delta)
and 1 elsewhere; two GRUs read avgpool(f_t): P1 (VQPL) runs k1 = vqi_level steps, P2 (FIPL)
runs k2 = fii_level steps; f_VQ = sum_t h_t, f_FI = sum_t w_t; fusion (add | concat); a
linear head gives one fake logit. Loss: focal cross-entropy + lreg_weight * L_REG (Eq. 2),
the entropy of hard samples' per-step predictions at the Tab. 8 steps.

Default backbone: ``convnext_atto`` at 64 px (params.yaml); the paper's is ConvNeXt-T at 224.

Deviations and readings of the paper:
- Stage I only: l_t comes from ``UniformPositions`` (the paper's "randomizer"). Stage II
  plugs a learned sampler Phi into ``self.positions`` (same call signature); the output
  keeps ``fsm_pooled`` (N,k,c) and ``positions`` (N,k-1) so PPO can re-score actions.
- l_t is an integer start in {0..c-delta} so the window always fits inside the c channels
  (the paper scales l_t to [0, c] and leaves the overflow unspecified). delta = round(c*delta_frac).
- Training draws l_t per sample from torch's global RNG (seeded by the engine). In eval mode
  one sequence l_1..l_{k-1} is drawn from a fresh generator seeded with EVAL_SEED and shared
  by the whole batch, so a score is a deterministic function of the image and its levels
  (independent of batch size and order).
- The GRUs only see avgpool(f_t); since M_t is constant over (h, w), avgpool(f_{t+1}) =
  (1 - M_t) * avgpool(f_t), so the FSM runs on the pooled (N, c) tensor (``fsm_step`` works on
  either; a test checks the equivalence). With ``fsm_recursive: true`` (as printed) the pooled
  input at step t+1 is avgpool(f_1) restricted to the *intersection* of windows 1..t, which
  is often empty after 2-3 steps; ``fsm_recursive: false`` uses f_{t+1} = f_1 - M_t * avgpool(f_1)
  (each step sees one fresh window of the original feature).
- Per-sample step counts in one batch: all k steps run for the whole batch; past its level a
  branch's hidden state is frozen (torch.where, so nothing of later steps leaks) and excluded
  from the sums.
- Per-step predictions for L_REG (a reading; the paper says "output features at different time
  steps"): the head applied to the cumulative fused feature up to step t. The last effective
  step of a sample is max(k1, k2) over the enabled branches; its step prediction equals the
  final logit.
- L_REG: hard = misclassified by the final prediction (detached), mean over the batch (paper:
  sum); a sample's selected steps' entropies are averaged (each hard sample weighs <= ln 2 in
  every Tab. 8 setting). lreg_sign +1 = Eq. (2) as printed (minimising lowers
  hard samples' step entropy, which at the last step pushes a misclassified sample to be more
  confidently wrong); -1 = the text's "defer decisions" (raise it).
- Focal loss without the alpha weight; the two ``use_*`` flags drop a branch entirely
  (Tab. 5 "w/o VQPL/FIPL"); attentional fusion (AFF, Tab. 7) is not implemented yet.
- Psi is timm's model with ``num_classes=0, global_pool=''`` (for ConvNeXt this keeps the
  head's LayerNorm, applied per location); random init unless ``pretrained`` is a file.
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.errors import UserError
from benchmark.method import Method, load_pretrained
from benchmark.registry import METHODS
from methods._losses import LREG_STEPS, entropy_regulariser, focal_bce_with_logits, hard_sample_mask, lreg_step_mask
from methods.baseline import create_backbone

EVAL_SEED = 0  # seeds the eval-mode mask positions (stage I has no Phi to decide them)
FUSIONS = ("add", "concat")


def gap(f: torch.Tensor) -> torch.Tensor:
    """Global average pool over every dimension after the channel one: (N, c, ...) -> (N, c)."""
    return f if f.dim() == 2 else f.flatten(2).mean(dim=2)


def window_mask(start: torch.Tensor, c: int, delta: int) -> torch.Tensor:
    """M_t (N, c): 0 on channels [start, start + delta), 1 elsewhere."""
    idx = torch.arange(c, device=start.device).unsqueeze(0)
    inside = (idx >= start.unsqueeze(1)) & (idx < start.unsqueeze(1) + delta)
    return (~inside).float()


def fsm_step(f_t: torch.Tensor, f_1: torch.Tensor, mask: torch.Tensor, recursive: bool = True) -> torch.Tensor:
    """f_{t+1} = src - M_t * avgpool(src), src = f_t (recursive, as printed) or f_1; any (N, c, ...)."""
    src = f_t if recursive else f_1
    shape = mask.shape + (1,) * (src.dim() - 2)
    return src - mask.to(src.dtype).view(shape) * gap(src).view(shape)


class UniformPositions(nn.Module):
    """Stage I position sampler: l_t uniform on {0..n_positions-1}.

    Sampler contract (stage II's Phi follows it): ``init_state(pooled_f1)`` -> state;
    ``forward(pooled_t, state)`` -> (start int64 (N,), state).
    """

    def __init__(self, n_positions: int, eval_seed: int = EVAL_SEED):
        super().__init__()
        self.n_positions, self.eval_seed = n_positions, eval_seed

    def init_state(self, pooled: torch.Tensor):
        return None if self.training else torch.Generator().manual_seed(self.eval_seed)

    def forward(self, pooled: torch.Tensor, state):
        n = pooled.shape[0]
        if state is None:  # training: per sample, torch's global RNG
            return torch.randint(self.n_positions, (n,), device=pooled.device), None
        start = torch.randint(self.n_positions, (1,), generator=state)  # eval: shared by the batch
        return start.expand(n).to(pooled.device), state


def _as_channels_first(f: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """timm features to (N, c, ...): NHWC models (Swin) and token sequences (ViT) are permuted."""
    if f.dim() == 4 and getattr(model, "output_fmt", "NCHW") == "NHWC":
        return f.permute(0, 3, 1, 2)
    if f.dim() == 3:
        return f.transpose(1, 2)
    return f


@METHODS.register_module(name="dpl")
class DPL(Method):
    requires = frozenset({"indicator_levels"})

    def __init__(self, backbone: str = "convnext_atto", pretrained: str | None = None, k: int = 5,
                 hidden: int = 256, delta_frac: float = 1 / 3, focal_gamma: float = 2.0,
                 lreg_weight: float = 1.0, lreg_sign: float = 1.0, lreg_steps: str = "all_up_to_last",
                 fusion: str = "add", use_vqpl: bool = True, use_fipl: bool = True,
                 fsm_recursive: bool = True):
        super().__init__()
        if fusion not in FUSIONS:
            raise UserError(f"methods.dpl.fusion={fusion!r} is unknown; choose one of: {', '.join(FUSIONS)}")
        if lreg_steps not in LREG_STEPS:
            raise UserError(f"methods.dpl.lreg_steps={lreg_steps!r} is unknown; choose one of: {', '.join(LREG_STEPS)}")
        if float(lreg_sign) not in (1.0, -1.0):
            raise UserError(f"methods.dpl.lreg_sign={lreg_sign!r} must be 1 or -1")
        if not (use_vqpl or use_fipl):
            raise UserError("methods.dpl: use_vqpl and use_fipl are both false; keep at least one branch")
        if int(k) < 1 or not 0 < float(delta_frac) <= 1:
            raise UserError(f"methods.dpl: need k >= 1 and 0 < delta_frac <= 1 (got k={k}, delta_frac={delta_frac})")
        self.backbone_name, self.k, self.hidden = backbone, int(k), int(hidden)
        self.focal_gamma, self.lreg_weight, self.lreg_sign = float(focal_gamma), float(lreg_weight), float(lreg_sign)
        self.lreg_steps, self.fusion, self.fsm_recursive = lreg_steps, fusion, bool(fsm_recursive)
        self.use_vqpl, self.use_fipl = bool(use_vqpl), bool(use_fipl)

        self.backbone = create_backbone(backbone, num_classes=0, global_pool="")  # Psi: spatial features
        self.weights = load_pretrained(self.backbone, pretrained)
        c = self.channels = self.backbone.num_features
        self.delta = min(max(round(c * float(delta_frac)), 1), c)
        self.positions = UniformPositions(c - self.delta + 1)
        self.gru_vq = nn.GRUCell(c, self.hidden) if self.use_vqpl else None  # P1
        self.gru_fi = nn.GRUCell(c, self.hidden) if self.use_fipl else None  # P2
        n_branches = int(self.use_vqpl) + int(self.use_fipl)
        self.head = nn.Linear(self.hidden * (n_branches if fusion == "concat" else 1), 1)

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
        return torch.cat(parts, dim=-1) if self.fusion == "concat" else torch.stack(parts).sum(0)

    def forward(self, batch: dict) -> dict:
        k1, k2 = self._levels(batch)
        f = _as_channels_first(self.backbone(self.normalize(batch["image"])), self.backbone)
        f1 = gap(f)  # the FSM acts on pooled features (see module docstring)
        n = f1.shape[0]
        branches = [(gru, lv) for gru, lv in ((self.gru_vq, k1), (self.gru_fi, k2)) if gru is not None]
        states = [f1.new_zeros(n, self.hidden) for _ in branches]
        sums = [f1.new_zeros(n, self.hidden) for _ in branches]
        cumulative, pooled_seq, starts = [], [], []
        x, sampler_state = f1, self.positions.init_state(f1)
        for t in range(1, self.k + 1):
            if t > 1:  # FSM: f_t from f_{t-1} and a sampled window start l_{t-1}
                start, sampler_state = self.positions(x, sampler_state)
                starts.append(start)
                x = fsm_step(x, f1, window_mask(start, self.channels, self.delta), self.fsm_recursive)
            pooled_seq.append(x)
            for i, (gru, level) in enumerate(branches):
                valid = (t <= level).unsqueeze(1)
                states[i] = torch.where(valid, gru(x, states[i]), states[i])  # frozen past the level
                sums[i] = sums[i] + torch.where(valid, states[i], torch.zeros_like(states[i]))
            cumulative.append(self._fuse(sums))
        step_logits = self.head(torch.stack(cumulative, dim=1)).squeeze(-1)  # (N, k)
        last = torch.stack([lv for _, lv in branches]).amax(0)
        step_valid = torch.arange(1, self.k + 1, device=last.device).unsqueeze(0) <= last.unsqueeze(1)
        positions = torch.stack(starts, 1) if starts else f1.new_zeros(n, 0, dtype=torch.long)
        return {"logit": step_logits[:, -1], "step_logits": step_logits, "step_valid": step_valid,
                "last_step": last, "positions": positions, "fsm_pooled": torch.stack(pooled_seq, 1)}

    # -- objective -------------------------------------------------------------------------
    def loss(self, out: dict, batch: dict) -> dict:
        label = batch["label"]
        focal = focal_bce_with_logits(out["logit"], label, self.focal_gamma)
        hard = hard_sample_mask(out["logit"], label)
        steps = lreg_step_mask(out["last_step"], self.k, self.lreg_steps)
        lreg = self.lreg_sign * entropy_regulariser(out["step_logits"], steps, hard)
        return {"loss": focal + self.lreg_weight * lreg, "focal": focal, "lreg": lreg}

    def provenance(self) -> dict:
        branches = [b for b, on in (("VQPL", self.use_vqpl), ("FIPL", self.use_fipl)) if on]
        return {"backbone": self.backbone_name, "weights": self.weights, "variant": {
            "stage": "I (uniform FSM positions)", "k": self.k, "hidden": self.hidden,
            "delta": f"{self.delta}/{self.channels}", "fsm_recursive": self.fsm_recursive,
            "branches": "+".join(branches), "fusion": self.fusion, "focal_gamma": self.focal_gamma,
            "lreg": {"weight": self.lreg_weight, "sign": self.lreg_sign, "steps": self.lreg_steps}}}

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
