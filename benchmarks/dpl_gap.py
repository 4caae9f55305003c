"""Why DPL's simplest form trails its own backbone on the default grid (an experiment, not a test).

    python benchmarks/dpl_gap.py [--runs linear,gru,gru_ln,dpl1,linear_bal,dpl1_bal] [--epochs 10]
                                 [--set methods.dpl.stage2_epochs=1 ...]

Each run trains on the default grid's data (``data/faces/ff``, ``data/indicators/ff.json``; build
them with ``python -m benchmark indicators dataset=ff``) with params.yaml's ``train`` section
(validation included; the final model is the last epoch's), then scores the c23 and c40 test crops under the random-JPEG conditions, like the protocol:

- ``linear``: resnet10t -> timm's average pool -> linear head (the baseline's path);
- ``gru`` / ``gru_ln``: the same with one GRU step from h_0 = 0 before the head (LayerNorm on
  its input for ``gru_ln``), logging the GRU's gates;
- ``dpl1``: DPL itself reduced to that form (k = 1, no stage II, plain cross-entropy, the
  paper reading): backbone -> pooled f -> one step of each GRU from 0 -> sum -> linear head;
- ``dpl``: DPL as params.yaml ``methods.dpl`` sets it (its reading, both stages, the indicator
  levels; the release's per-stage options included);
- ``*_bal``: the same with class-balanced epochs -- every fake once plus as many reals drawn
  at random (seeded per epoch), as the authors' release pairs each fake with a random real. This
  wrapper exists only for this experiment; the harness's balanced sampler is the engine's
  ``train.sampler`` (another branch).

Prints one ``key=value`` line per run: ``auc_c23``/``auc_c40`` (frame level, mean over DF, F2F,
FS, NT of the mean over the four conditions, %), the per-epoch training loss, the process CPU
seconds, and for the GRU probes per epoch: the share of update-gate units with z > 0.95
(``z_closed``), the share of candidate pre-activations with |.| > 2 (``tanh_sat``) and the
between-sample standard deviation of h (``h_spread``). With h_0 = 0 a GRU step outputs
(1 - z) * tanh(.), so these say how much of the sample still reaches the head. What one run
showed is in README.md (the DPL section), with its command.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import benchmark  # noqa: E402,F401  (torchvision shim)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402

from benchmark import config, engine, registry  # noqa: E402
from benchmark.backbones import create_backbone  # noqa: E402
from benchmark.data.frames import TrainFrames  # noqa: E402
from benchmark.data.jpeg import RandomJPEG  # noqa: E402
from benchmark.data.views import compose  # noqa: E402
from benchmark.evaluation import score as ev  # noqa: E402
from benchmark.method import Method  # noqa: E402
from benchmark.pipeline import inputs, stages  # noqa: E402
from benchmark.pipeline.graph import faces_dir, parse_train_set  # noqa: E402


class Probe(Method):
    """Backbone -> pooled feature -> (linear | one GRU step from 0 [after LayerNorm]) -> head."""

    def __init__(self, head: str, norm: bool = False, hidden: int = 256):
        super().__init__()
        self.backbone = create_backbone("resnet10t", num_classes=0)
        self.use_input_stats(self.backbone)
        c = self.backbone.num_features
        self.norm = nn.LayerNorm(c) if norm else nn.Identity()
        self.gru = nn.GRUCell(c, hidden) if head == "gru" else None
        self.head = nn.Linear(hidden if self.gru else c, 1)
        self.gates = []

    def forward(self, batch):
        f = self.norm(self.backbone(self.normalize(batch["image"])))
        if self.gru is None:
            return {"logit": self.head(f).squeeze(1)}
        h = self.gru(f, f.new_zeros(f.shape[0], self.gru.hidden_size))
        if self.training:
            with torch.no_grad():
                n, g = self.gru.hidden_size, f @ self.gru.weight_ih.T + self.gru.bias_ih
                b = self.gru.bias_hh
                z = torch.sigmoid(g[:, n:2 * n] + b[n:2 * n])
                pre = g[:, 2 * n:] + torch.sigmoid(g[:, :n] + b[:n]) * b[2 * n:]
                self.gates.append([float((z > 0.95).float().mean()), float((pre.abs() > 2).float().mean()),
                                   float(h.std(0).mean())])
        return {"logit": self.head(h).squeeze(1)}


class BalancedEpochs(torch.utils.data.Dataset):
    """Experiment only: every fake once per epoch plus as many reals drawn at random."""

    def __init__(self, frames: TrainFrames):
        self.frames = frames
        labels = frames.rows["label"].to_numpy()
        self.fakes, self.reals = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)

    def __len__(self):
        return 2 * len(self.fakes)

    seed = property(lambda self: self.frames.seed, lambda self, v: setattr(self.frames, "seed", v))
    epoch = property(lambda self: self.frames.epoch, lambda self, v: setattr(self.frames, "epoch", v))

    def __getitem__(self, i):
        if i < len(self.fakes):
            return self.frames[int(self.fakes[i])]
        rng = np.random.default_rng([self.seed, self.epoch, i, 7])
        return self.frames[int(self.reals[rng.integers(len(self.reals))])]


class OneLevel:
    """Indicator levels all 1 (DPL with k = 1 runs one step), scores from the real indicator."""

    def __init__(self, indicator):
        self.score = indicator.score

    def levels(self, images):
        return tuple(torch.ones(images.shape[0], dtype=torch.long) for _ in range(2))

    def levels_from_scores(self, scores):
        return tuple(torch.ones(len(scores["vqi"]), dtype=torch.long) for _ in range(2))


def build(run: str, params: dict):
    kind = run.removesuffix("_bal")
    if kind == "dpl":
        return registry.get(registry.METHODS, "dpl")(**stages.resolve_method(params, "dpl")[1])
    if kind == "dpl1":
        opts = {**stages.resolve_method(params, "dpl")[1], "reading": "paper", "k": 1, "stage2_epochs": 0,
                "lreg_weight": 0.0, "focal_gamma": 0.0}
        return registry.get(registry.METHODS, "dpl")(**opts)
    return Probe("linear" if kind == "linear" else "gru", norm=kind == "gru_ln")


def frame_auc(df) -> dict:
    out = {}
    for q, g in df.groupby("quality"):
        per = [np.mean([roc_auc_score(c.label, c.score) for _, c in s.groupby("severity")])
               for s in (g[(g.label == 0) | (g.manipulation == m)] for m in ("DF", "F2F", "FS", "NT"))]
        out[f"auc_{q}"] = round(100 * float(np.mean(per)), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="linear,gru,gru_ln,dpl1,linear_bal,dpl1_bal")
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs (default: params.yaml's)")
    ap.add_argument("--set", nargs="*", default=[], help="params.yaml overrides, key=value")
    args = ap.parse_args()
    torch.set_num_threads(1)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    if args.epochs:
        overrides["train.epochs"] = str(args.epochs)
    params = config.load_params(overrides, root=ROOT)
    indicator = inputs.indicator(params, "ff")
    for run in args.runs.split(","):
        start = resource.getrusage(resource.RUSAGE_SELF)
        torch.manual_seed(0)
        model = build(run, params)
        levels = OneLevel(indicator) if run.startswith("dpl1") else indicator
        cfg = {**params["train"], **model.train_options(), "select": "last"}
        views = cfg.get("views", "single")
        data = TrainFrames(inputs.manifest("ff", "c23", "train"), faces_dir("ff"), seed=0,
                           augment=RandomJPEG() if cfg["jpeg_aug"] and views == "single" else None)
        data = compose(BalancedEpochs(data) if run.endswith("_bal") else data, views)
        with tempfile.TemporaryDirectory() as work:
            val = stages._val_frames(parse_train_set("ff_c23", params), cfg.get("val"), 0, "ff_c23")
            summary = engine.train(model, data, Path(work), cfg, 0, levels=levels.levels, fingerprint=run,
                                   val_data=val)
            names = [s["stage"] for s in summary.get("stages", [{"stage": "train"}])]
            loss = engine.history(Path(work), names)["train_loss"].round(3).tolist()
        cond = registry.get(registry.PERTURBATIONS, "random_jpeg")()
        scores = [ev.score(model, inputs.manifest("ff", q, "test"), faces_dir("ff"), cond, levels, 64, 0)
                  for q in ("c23", "c40")]
        import pandas as pd
        end = resource.getrusage(resource.RUSAGE_SELF)
        line = {"run": run, **frame_auc(pd.concat(scores)), "train_loss": loss,
                "cpu_s": round(end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime, 1)}
        gates = np.asarray(getattr(model, "gates", []))
        if len(gates):
            per_epoch = np.array_split(gates, len(loss))
            for i, key in enumerate(("z_closed", "tanh_sat", "h_spread")):
                line[key] = [round(float(e[:, i].mean()), 3) for e in per_epoch]
        print(" ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in line.items()), flush=True)


if __name__ == "__main__":
    main()
