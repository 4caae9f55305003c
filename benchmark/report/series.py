"""What DVC compares across experiments: the headline AUCs (``results/metrics.json``, shown
by ``dvc exp show`` / ``dvc metrics diff``) and CSV data series (``dvc plots diff`` overlays
them per revision).

``headline(metrics, protocols)`` -> {protocol: {method: {key: AUC}}}: frame-level AUC, mean
over seeds, of the protocol's table average -- the mean over its listed subsets (the pooled
``all`` only when it is the one listed) and over its train sets -- keyed by test set, plus
``/<perturbation>`` when a protocol has several (robustness: one value per distortion, the
mean over its severities). About one number per table cell group, so ``dvc exp show`` stays
readable.

``protocol_series(...)`` writes one protocol's, under ``results/curves/<protocol>/``:

- ``severity/<method>.csv``: severity, then one AUC column per distortion (frame level, subset
  ``all``, mean over seeds) for protocols with per-severity perturbations;
- ``roc/<test_set>/<method>.csv``: fpr, tpr of the pooled scores (every condition and seed;
  frame level, all subsets) for the figures of kind ``roc`` the protocol asks for;

``model_series(...)`` the models', under ``results/curves/models/``:

- ``step_auc/<method>.csv``: step, then one all-sample AUC column per test set (from the
  ``analyze`` stage's ``<method>_step_auc.csv``);
- ``training/<method>.csv``: step (epochs counted across stages), stage, epoch, train_loss,
  lr and any ``val_*`` columns of the model's ``history.csv``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from benchmark import config, io
from benchmark.evaluation.metrics import headline_rows

POOLED = "all"


def _subsets(proto: dict) -> list[str] | None:
    listed = [str(s["name"] if isinstance(s, dict) else s) for s in proto.get("subsets") or []]
    if not listed:
        return None
    return [s for s in listed if s != POOLED] or [POOLED]


def headline(metrics: pd.DataFrame, protocols: dict) -> dict:
    head = headline_rows(metrics)
    head = head[head["level"] == "frame"]
    out: dict = {}
    for name, proto in protocols.items():
        rows = head[head["protocol"] == name]
        subsets = _subsets(proto)
        rows = rows[rows["subset"].astype(str).isin(subsets)] if subsets else rows[rows["subset"] != POOLED]
        if rows.empty:
            continue
        pert = rows["perturbation"].astype(object).where(rows["perturbation"].notna(), "")
        several = pert.nunique() > 1
        rows = rows.assign(key=rows["test_set"].astype(str) + (("/" + pert.astype(str)) if several else ""))
        per_seed = rows.groupby(["method", "key", "seed"], sort=False)["auc"].agg(lambda a: a.mean(skipna=False))
        for (method, key), v in per_seed.groupby(level=[0, 1], sort=False).mean().items():
            out.setdefault(name, {}).setdefault(str(method), {})[key] = None if pd.isna(v) else round(float(v), 4)
    return out


def severity_frames(metrics: pd.DataFrame, name: str) -> dict[str, pd.DataFrame]:
    rows = metrics[(metrics["protocol"] == name) & (metrics["level"] == "frame") & metrics["severity"].notna()
                   & (metrics["subset"].astype(str) == POOLED) & (metrics["perturbation"] != "random_jpeg")]
    out = {}
    for method, g in rows.groupby("method", sort=False):
        wide = g.groupby(["severity", "perturbation"])["auc"].mean().unstack("perturbation")
        out[str(method)] = wide.reset_index().assign(severity=lambda d: d["severity"].astype(int))
    return out


def roc_frame(scores: pd.DataFrame, protocol: str, test_set: str, method: str) -> pd.DataFrame | None:
    s = scores[(scores["protocol"] == protocol) & (scores["test_set"] == test_set) & (scores["method"] == method)]
    if s["label"].nunique() < 2:
        return None
    fpr, tpr, _ = roc_curve(s["label"], s["score"])
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).round().astype(int))  # small files
    return pd.DataFrame({"fpr": fpr[keep].round(5), "tpr": tpr[keep].round(5)})


def training_frame(history: pd.DataFrame) -> pd.DataFrame:
    h = history.reset_index(drop=True)
    cols = ["stage", "epoch", *[c for c in ("train_loss", "lr") if c in h], *[c for c in h if c.startswith("val_")]]
    return h[cols].assign(step=np.arange(1, len(h) + 1))[["step", *cols]]


def step_auc_frame(analysis_dir: Path) -> tuple[str, pd.DataFrame] | None:
    files = sorted(Path(analysis_dir).glob("*_step_auc.csv"))
    if not files:
        return None
    t = pd.read_csv(files[0])
    wide = t.pivot_table(index="step", columns="test_set", values="auc_all", sort=False).reset_index()
    return files[0].name.removesuffix("_step_auc.csv"), wide


def roc_specs(protocols: dict) -> list[tuple[str, str]]:
    """(protocol, test_set) of every ``{kind: roc, test_set: T}`` figure the protocols ask for."""
    return [(name, str(f["test_set"])) for name, proto in protocols.items() for f in config.figure_specs(proto, "roc")]


def roc_frames(scores: pd.DataFrame, protocols: dict) -> dict:
    """{(protocol, test_set): {method: (fpr, tpr) frame}} for the protocols' ``roc`` figures."""
    out = {}
    for name, test_set in roc_specs(protocols):
        for method in scores.loc[scores["protocol"] == name, "method"].unique():
            frame = roc_frame(scores, name, test_set, method)
            if frame is not None:
                out.setdefault((name, test_set), {})[str(method)] = frame
    return out


def protocol_series(metrics: pd.DataFrame, rocs: dict, name: str, out_dir: Path) -> list[Path]:
    """One protocol's series under ``out_dir``: ``severity/<method>.csv`` and ``roc/<test_set>/<method>.csv``."""
    out_dir, written = Path(out_dir), []
    out_dir.mkdir(parents=True, exist_ok=True)  # a DVC output even when the protocol has no series
    for method, frame in severity_frames(metrics, name).items():
        written.append(out_dir / "severity" / f"{method}.csv")
        io.write_csv(written[-1], frame)
    for (protocol, test_set), frames in rocs.items():
        for method, frame in frames.items():
            written.append(out_dir / "roc" / test_set / f"{method}.csv")
            io.write_csv(written[-1], frame)
    return written


def read_rocs(out_dir: Path, name: str) -> dict:
    """The ROC frames ``protocol_series`` wrote for protocol ``name``, as ``roc_frames`` gives them."""
    out = {}
    for f in sorted((Path(out_dir) / "roc").glob("*/*.csv")):
        out.setdefault((name, f.parent.name), {})[f.stem] = pd.read_csv(f)
    return out


def model_series(histories: dict, analysis_dirs: list, out_dir: Path) -> list[Path]:
    """``training/<method>.csv`` from each history and ``step_auc/<method>.csv`` from each analysis."""
    out_dir, written = Path(out_dir), []
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in analysis_dirs:
        got = step_auc_frame(d)
        if got is not None:
            written.append(out_dir / "step_auc" / f"{got[0]}.csv")
            io.write_csv(written[-1], got[1])
    for method, history in histories.items():
        written.append(out_dir / "training" / f"{method}.csv")
        io.write_csv(written[-1], training_frame(history))
    return written
