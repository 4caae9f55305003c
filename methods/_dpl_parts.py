"""Building blocks of DPL (methods/dpl.py): the FSM update, the two position samplers (stage I's
randomizer and stage II's Phi), the value network V, attentional feature fusion and the
Tab. 9 image features (CLIP's image tower or a stand-in).

Sampler contract: ``init_state(pooled_f1)`` -> state; ``forward(pooled_t, state)`` ->
(start int64 (N,), state, action float (N,)), where ``action`` in [0, 1] is the position before
it is scaled to a window start (what PPO re-scores and what the analysis plots).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EVAL_SEED = 0  # seeds the eval-mode positions of the stage-I randomizer


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


def scale_position(action: torch.Tensor, n_positions: int) -> torch.Tensor:
    """l_t in [0, 1] (clamped) -> integer window start in {0 .. n_positions - 1}."""
    return torch.round(action.clamp(0.0, 1.0) * (n_positions - 1)).long()


class UniformPositions(nn.Module):
    """Stage I's randomizer: l_t uniform on {0..n_positions-1}.

    Training draws per sample from torch's global RNG (seeded by the engine). Eval mode draws from
    a generator seeded with ``eval_seed`` at every forward: one sequence shared by the whole batch
    (``per_sample`` false, so a score never depends on batch size or order) or one per sample
    (``per_sample`` true, the release: a score then depends on its place in the batch, which is
    fixed by the evaluation order, so reruns still agree).
    """

    def __init__(self, n_positions: int, eval_seed: int = EVAL_SEED, per_sample: bool = False):
        super().__init__()
        self.n_positions, self.eval_seed, self.per_sample = n_positions, eval_seed, bool(per_sample)

    def init_state(self, pooled: torch.Tensor):
        return None if self.training else torch.Generator().manual_seed(self.eval_seed)

    def forward(self, pooled: torch.Tensor, state):
        n = pooled.shape[0]
        if state is None:
            start = torch.randint(self.n_positions, (n,), device=pooled.device)
        elif self.per_sample:
            start = torch.randint(self.n_positions, (n,), generator=state).to(pooled.device)
        else:
            start = torch.randint(self.n_positions, (1,), generator=state).expand(n).to(pooled.device)
        return start, state, start.float() / max(self.n_positions - 1, 1)


class GaussianPositions(nn.Module):
    """Phi of stage II: a GRU over avgpool(f_t) giving mu_t (and sigma_t); l_t ~ N(mu_t, sigma_t).

    mu_t = sigmoid(.) in (0, 1). ``sigma``: ``state`` -- sigma_t = sigma_min + softplus(.) from
    the GRU state (the paper: Phi "generates a mean and a standard variation"; bounded below so
    the log-density stays finite); ``learned`` -- one learned, state-independent log sigma,
    initially log ``sigma_init`` (the release). ``value_head``: V as a linear head on the GRU
    state (the release's shared actor-critic trunk) instead of a separate ``ValueNet``.
    ``clamp_action``: the action PPO scores is the sample clamped to [0, 1] (the release) rather
    than the raw sample. Either way the window start is the clamped action, scaled.
    Training samples; eval mode takes l_t = mu_t (``eval_sample`` false, deterministic scores)
    or samples from a generator seeded with EVAL_SEED (``eval_sample`` true).
    """

    def __init__(self, channels: int, n_positions: int, hidden: int, sigma_min: float = 0.02,
                 eval_sample: bool = False, sigma: str = "state", sigma_init: float = 0.1,
                 value_head: bool = False, clamp_action: bool = False):
        super().__init__()
        self.n_positions, self.sigma_min, self.eval_sample = n_positions, float(sigma_min), bool(eval_sample)
        self.sigma_mode, self.clamp_action = sigma, bool(clamp_action)
        self.gru = nn.GRUCell(channels, hidden)
        self.out = nn.Linear(hidden, 2 if sigma == "state" else 1)
        nn.init.zeros_(self.out.weight)  # start as N(0.5, sigma_0): a broad, unbiased policy
        nn.init.zeros_(self.out.bias)
        if sigma == "learned":
            self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init)))
        self.value_head = nn.Linear(hidden, 1) if value_head else None

    def step(self, pooled: torch.Tensor, h: torch.Tensor | None):
        """One recurrent step: (mu, sigma, h')."""
        h = self.gru(pooled, h)
        o = self.out(h)
        mu = torch.sigmoid(o[:, 0])
        sigma = self.sigma_min + F.softplus(o[:, 1]) if self.sigma_mode == "state" else self.log_sigma.exp().expand_as(mu)
        return mu, sigma, h

    def init_state(self, pooled: torch.Tensor):
        gen = None if self.training or not self.eval_sample else torch.Generator().manual_seed(EVAL_SEED)
        return {"h": None, "gen": gen}

    def forward(self, pooled: torch.Tensor, state):
        mu, sigma, h = self.step(pooled, state["h"])
        if self.training:
            action = torch.normal(mu, sigma)
        elif state["gen"] is not None:
            action = mu + sigma * torch.randn(mu.shape, generator=state["gen"]).to(mu.device)
        else:
            action = mu
        if self.clamp_action:
            action = action.clamp(0.0, 1.0)
        return scale_position(action, self.n_positions), {"h": h, "gen": state["gen"]}, action

    def evaluate(self, pooled_seq: torch.Tensor, actions: torch.Tensor):
        """log p_Phi(l_t | f_t), the entropy of N(mu_t, sigma_t) and the shared trunk's value
        (None without ``value_head``) for given states (N, T, c) and actions (N, T): the whole
        batch at once, one GRU step per time step."""
        if actions.shape[1] == 0:  # k = 1: no FSM step, nothing to score
            zero = actions.new_zeros(actions.shape)
            return zero, zero, (zero if self.value_head is not None else None)
        h, logp, ent, val = None, [], [], []
        for t in range(actions.shape[1]):
            mu, sigma, h = self.step(pooled_seq[:, t], h)
            dist = torch.distributions.Normal(mu, sigma)
            logp.append(dist.log_prob(actions[:, t]))
            ent.append(dist.entropy())
            if self.value_head is not None:
                val.append(self.value_head(h).squeeze(-1))
        return torch.stack(logp, 1), torch.stack(ent, 1), (torch.stack(val, 1) if val else None)


class ValueNet(nn.Module):
    """V(f_t): a two-layer MLP on avgpool(f_t) predicting the return (Eq. 5)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled).squeeze(-1)


class AttentionalFusion(nn.Module):
    """AFF (Dai et al., "Attentional Feature Fusion", WACV 2021) on vectors (N, C):
    Z = M * X + (1 - M) * Y with M = sigmoid(L(X + Y) + G(X + Y)), where L and G are MS-CAM's
    local and global bottleneck MLPs (ratio r). On 1x1 maps the global pooling is the identity,
    so both contexts see the same vector but keep separate weights, as in MS-CAM."""

    def __init__(self, channels: int, r: int = 4):
        super().__init__()
        mid = max(channels // r, 1)
        self.local = nn.Sequential(nn.Linear(channels, mid), nn.LayerNorm(mid), nn.ReLU(), nn.Linear(mid, channels))
        self.glob = nn.Sequential(nn.Linear(channels, mid), nn.ReLU(), nn.Linear(mid, channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = x + y
        m = torch.sigmoid(self.local(s) + self.glob(s))
        return m * x + (1 - m) * y


class StandInImageEncoder(nn.Module):
    """A frozen, seeded, random-init conv encoder (3 stride-2 convs, GAP) used for Tab. 9 when
    no CLIP weights are given: it is NOT CLIP and ``provenance()`` says so."""

    def __init__(self, dim: int = 64, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(64, dim, 3, 2, 1))
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=g) * (1 / math.sqrt(max(p[0].numel(), 1)))
            p.requires_grad_(False)
        self.dim = dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return gap(self.net(image))


class OpenCLIPImageEncoder(nn.Module):
    """The open_clip image tower loaded from a local checkpoint, frozen; images are resized to
    its input size and normalised with CLIP's statistics."""

    MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model: str, weights: str):
        super().__init__()
        import open_clip
        clip = open_clip.create_model(model, pretrained=weights)
        self.visual = clip.visual.eval()
        for p in self.visual.parameters():
            p.requires_grad_(False)
        size = self.visual.image_size
        self.size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.dim = int(clip.visual.output_dim)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(image, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return self.visual((x.clamp(0, 1) - self.mean) / self.std).float()


def as_channels_first(f: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """timm features to (N, c, ...): NHWC models (Swin) and token sequences (ViT) are permuted."""
    if f.dim() == 4 and getattr(model, "output_fmt", "NCHW") == "NHWC":
        return f.permute(0, 3, 1, 2)
    if f.dim() == 3:
        return f.transpose(1, 2)
    return f


class ImageFeatures(nn.Module):
    """Tab. 9: a frozen image encoder's feature joined to DPL. ``mode``: ``concat_psi`` (appended
    to Psi's pooled feature: ``channels(c)`` = c + dim), ``add_psi`` (projected to c and added to
    it) or ``add_branches`` (projected to the GRU width and added to both branches' features).
    The CLIP image tower of ``clip_weights`` (open_clip ``clip_model``), else a frozen random
    stand-in (``desc`` says so). The encoder is kept out of the state dict (frozen, rebuilt)."""

    def __init__(self, mode: str, clip_model: str, clip_weights: str | None):
        super().__init__()
        enc = OpenCLIPImageEncoder(clip_model, clip_weights) if clip_weights else StandInImageEncoder()
        self._encoder = [enc.eval()]
        self.mode, self.dim, self.proj = mode, enc.dim, None
        self.desc = (f"open_clip {clip_model} ({clip_weights})" if clip_weights
                     else "stand-in, not CLIP: frozen random-init conv encoder (no clip_weights)")

    def channels(self, c: int) -> int:
        return c + self.dim if self.mode == "concat_psi" else c

    def build(self, c: int, hidden: int) -> None:
        if self.mode != "concat_psi":
            self.proj = nn.Linear(self.dim, c if self.mode == "add_psi" else hidden)

    def forward(self, f1: torch.Tensor, image: torch.Tensor):
        """(Psi's feature, the term added to the branches or None)."""
        enc = self._encoder[0].to(f1.device)
        with torch.no_grad():
            x = enc(image)
        if self.mode == "concat_psi":
            return torch.cat([f1, x], dim=1), None
        if self.mode == "add_psi":
            return f1 + self.proj(x), None
        return f1, self.proj(x)
