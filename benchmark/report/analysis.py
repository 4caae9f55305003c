"""Analysis outputs of the DPL paper (Fig. 10-11 analogues and what progressive learning does).

``benchmark.pipeline.stages.analyze`` (the ``analyze`` verb) writes, with these functions, for a
trained method whose forward returns ``step_logits``/``step_valid`` (and ``positions`` for the FSM):

- ``results/analysis/<method>_step_auc.csv`` and plot ``<method>_step_auc``: the AUC of the
  per-step prediction at each time step t, per test set of the protocol (clean test crops,
  levels from the indicator on those crops), over all samples (a sample past its last
  effective step keeps its last prediction) and over the samples still active at t;
- ``<method>_positions.csv`` and plot ``<method>_positions``: the distribution of the window
  starts l_t the FSM chose at each step (Phi after stage II, the randomizer otherwise);
- ``<method>_level_auc.csv`` and plot ``<method>_level_auc``: the AUC of the final prediction
  within each (VQI level, FII level) cell against the pooled AUC of the same test set: a method
  whose cells sit near 0.5 while the pooled AUC is high separates the classes by their
  indicator levels (the step count), not within a level;
- ``<method>_real_logit.csv`` and plot ``<method>_real_logit``: the mean final logit of the
  reals (and of the fakes) per number of steps the sample ran (its last effective step): with
  summed states the logit's offset follows the step count;

and, for any method (the indicator, not the detector):

- ``indicator_levels.csv`` and plot ``indicator_levels``: VQI level histograms per true
  quality and FII level histograms per manipulation, with the Spearman correlations the
  indicators stage stored (data/indicators/<D>.json ``spearman``) of the scores with SynthFF's
  true CRF and manipulation strength.

Plots are PNG + SVG under ``results/plots/`` with a one-paragraph caption in ``<name>.txt``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from benchmark import io

ANALYSIS, PLOTS = Path("results/analysis"), Path("results/plots")


@torch.no_grad()
def step_outputs(method, rows: pd.DataFrame, faces_dir, indicator, batch_size: int = 64,
                 device="cpu") -> pd.DataFrame:
    """One row per crop (the method run on ``device``): label, manipulation, levels, last_step,
    logit_<t>, start_<t>."""
    from benchmark.data.frames import crops_tensor
    method.to(device).eval()
    rows = rows.reset_index(drop=True)
    parts = []
    for lo in range(0, len(rows), batch_size):
        chunk = rows.iloc[lo:lo + batch_size]
        images = crops_tensor(faces_dir, chunk).to(device)
        vqi, fii = indicator.levels(images)
        out = method({"image": images.float() / 255, "vqi_level": vqi.to(device), "fii_level": fii.to(device)})
        if "step_logits" not in out:
            return pd.DataFrame()
        out = {k: v.cpu() for k, v in out.items() if isinstance(v, torch.Tensor)}
        part = {"label": chunk["label"].to_numpy(), "manipulation": chunk["manipulation"].astype(str).to_numpy(),
                "vqi_level": vqi.numpy(), "fii_level": fii.numpy(), "last_step": out["last_step"].numpy()}
        part.update({f"logit_{t + 1}": out["step_logits"][:, t].numpy() for t in range(out["step_logits"].shape[1])})
        pos = out.get("positions", torch.zeros(len(chunk), 0))
        part.update({f"start_{t + 1}": pos[:, t].numpy() for t in range(pos.shape[1])})
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def _auc(y, s) -> float:
    return float(roc_auc_score(y, s)) if len(set(y)) == 2 else float("nan")


def step_auc(df: pd.DataFrame) -> pd.DataFrame:
    """AUC of the step-t prediction (all samples; active samples: last_step >= t)."""
    steps = sorted(int(c.split("_")[1]) for c in df.columns if c.startswith("logit_"))
    out = []
    for t in steps:
        active = df[df["last_step"] >= t]
        out.append({"step": t, "auc_all": _auc(df["label"], df[f"logit_{t}"]),
                    "auc_active": _auc(active["label"], active[f"logit_{t}"]), "n_active": len(active)})
    return pd.DataFrame(out)


def final_logit(df: pd.DataFrame) -> np.ndarray:
    """Each sample's final prediction: its step logit at its last effective step."""
    steps = df[[f"logit_{t}" for t in range(1, int(df["last_step"].max()) + 1)]].to_numpy()
    return steps[np.arange(len(df)), df["last_step"].to_numpy() - 1]


def level_cell_auc(df: pd.DataFrame) -> pd.DataFrame:
    """(vqi_level, fii_level, n_real, n_fake, auc, pooled_auc): the final prediction's AUC in
    each indicator-level cell (NaN where a cell lacks one class) and over all samples."""
    df = df.assign(final=final_logit(df))
    pooled = _auc(df["label"], df["final"])
    rows = [{"vqi_level": int(v), "fii_level": int(f), "n_real": int((g["label"] == 0).sum()),
             "n_fake": int((g["label"] == 1).sum()), "auc": _auc(g["label"], g["final"]), "pooled_auc": pooled}
            for (v, f), g in df.groupby(["vqi_level", "fii_level"])]
    return pd.DataFrame(rows, columns=["vqi_level", "fii_level", "n_real", "n_fake", "auc", "pooled_auc"])


def logit_by_steps(df: pd.DataFrame) -> pd.DataFrame:
    """(label, steps, n, mean_logit): the mean final logit per class and number of steps run."""
    df = df.assign(final=final_logit(df))
    rows = [{"label": int(lab), "steps": int(k), "n": len(g), "mean_logit": float(g["final"].mean())}
            for (lab, k), g in df.groupby(["label", "last_step"])]
    return pd.DataFrame(rows, columns=["label", "steps", "n", "mean_logit"])


def position_counts(df: pd.DataFrame) -> pd.DataFrame:
    """(step, start, count) over the samples for which l_t shaped a used feature f_{t+1}."""
    cols = sorted((c for c in df.columns if c.startswith("start_")), key=lambda c: int(c.split("_")[1]))
    out = []
    for c in cols:
        t = int(c.split("_")[1])
        used = df[df["last_step"] >= t + 1][c]
        out += [{"step": t, "start": int(s), "count": int(n)} for s, n in used.value_counts().sort_index().items()]
    return pd.DataFrame(out, columns=["step", "start", "count"])


def level_counts(indicator_rows: pd.DataFrame) -> pd.DataFrame:
    """(indicator, group_by, group, level, count): VQI by true quality, FII by manipulation."""
    out = []
    for ind, by in (("vqi", "quality"), ("fii", "manipulation")):
        counts = indicator_rows.groupby([by, f"{ind}_level"]).size()
        out += [{"indicator": ind, "group_by": by, "group": str(g), "level": int(lv), "count": int(n)}
                for (g, lv), n in counts.items()]
    return pd.DataFrame(out)


def _save_plot(fig, name: str, caption: str, plot_dir: Path = PLOTS) -> list[Path]:
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_dir / f"{name}.png", plot_dir / f"{name}.svg"]
    for p in paths:
        with io.atomic_path(p) as tmp:
            fig.savefig(tmp, format=p.suffix[1:], dpi=120, bbox_inches="tight", metadata=_META[p.suffix])
    io.write_text(plot_dir / f"{name}.txt", caption.strip() + "\n")
    return paths + [plot_dir / f"{name}.txt"]


_META = {".png": {"Software": None}, ".svg": {"Date": None, "Creator": None}}  # same bytes on a rerun


def plot_step_auc(table: pd.DataFrame, method: str, plot_dir: Path = PLOTS) -> list[Path]:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for test_set, g in table.groupby("test_set", sort=False):
        ax.plot(g["step"], 100 * g["auc_all"], marker="o", label=f"{test_set}: all samples")
        ax.plot(g["step"], 100 * g["auc_active"], marker="x", ls="--", label=f"{test_set}: active at t")
    ax.set(xlabel="time step t", ylabel="AUC of the step-t prediction (%)", xticks=sorted(table["step"].unique()))
    ax.legend(fontsize=7)
    best = table.loc[table.groupby("test_set")["auc_all"].idxmax()]
    caption = (f"AUC of {method}'s per-step prediction at each time step t, per test set (clean test crops). "
               "Solid: all samples, a sample past its last effective step keeping its last prediction; dashed: "
               "only the samples whose last effective step is at least t. If progressive learning progresses, "
               "the curves rise with t. Highest all-sample AUC: " + "; ".join(
                   f"{r.test_set} at t={int(r.step)} ({100 * r.auc_all:.2f})" for r in best.itertuples()) + ".")
    paths = _save_plot(fig, f"{method}_step_auc", caption, plot_dir)
    plt.close(fig)
    return paths


def plot_positions(counts: pd.DataFrame, method: str, n_positions: int | None, plot_dir: Path = PLOTS) -> list[Path]:
    import matplotlib.pyplot as plt
    steps = sorted(counts["step"].unique())
    fig, axes = plt.subplots(1, max(len(steps), 1), figsize=(2.4 * max(len(steps), 1), 2.6), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], steps):
        g = counts[counts["step"] == t]
        ax.bar(g["start"], g["count"], width=max(1, (n_positions or 10) / 60))
        ax.set(title=f"l_{t}", xlabel="window start (channel)")
    axes[0][0].set_ylabel("samples")
    spread = counts.groupby("step").apply(lambda g: int((g["count"] > 0).sum()), include_groups=False)
    caption = (f"Distribution of the FSM window starts l_t that {method} used at test time, per step "
               "(counting only samples for which l_t shaped a feature a branch read). Distinct starts per "
               "step: " + ", ".join(f"l_{t}: {n}" for t, n in spread.items()) + ". A learned Phi that "
               "collapses shows one bar per step; the stage-I randomizer shows one shared draw per step.")
    paths = _save_plot(fig, f"{method}_positions", caption, plot_dir)
    plt.close(fig)
    return paths


def plot_level_auc(table: pd.DataFrame, method: str, plot_dir: Path = PLOTS) -> list[Path]:
    import matplotlib.pyplot as plt
    sets = list(table["test_set"].unique())
    fig, axes = plt.subplots(1, len(sets), figsize=(3.4 * len(sets), 3.0), squeeze=False)
    k = int(max(table["vqi_level"].max(), table["fii_level"].max()))
    for ax, name in zip(axes[0], sets):
        g = table[table["test_set"] == name]
        grid = np.full((k, k), np.nan)
        grid[g["vqi_level"] - 1, g["fii_level"] - 1] = 100 * g["auc"]
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", origin="lower")
        for (v, f), a in np.ndenumerate(grid):
            if np.isfinite(a):
                ax.text(f, v, f"{a:.0f}", ha="center", va="center", fontsize=7)
        ax.set(title=f"{name}: pooled {100 * g['pooled_auc'].iloc[0]:.1f}", xlabel="FII level", ylabel="VQI level",
               xticks=range(k), xticklabels=range(1, k + 1), yticks=range(k), yticklabels=range(1, k + 1))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="AUC in the cell (%)")
    within = table.assign(w=table["n_real"] + table["n_fake"]).dropna(subset=["auc"])
    mean_within = within.groupby("test_set").apply(lambda g: float(np.average(g["auc"], weights=g["w"])),
                                                    include_groups=False)
    caption = (f"AUC of {method}'s final prediction within each (VQI level, FII level) cell of the clean test "
               "crops (empty: the cell lacks reals or fakes), against the pooled AUC over all crops (title). "
               "Sample-weighted mean of the cell AUCs vs pooled: " + "; ".join(
                   f"{t} {100 * mean_within[t]:.1f} vs {100 * table[table['test_set'] == t]['pooled_auc'].iloc[0]:.1f}"
                   for t in mean_within.index) + ". A pooled AUC far above the cells' means the classes are "
               "told apart by their indicator levels (the number of steps), not within a level.")
    paths = _save_plot(fig, f"{method}_level_auc", caption, plot_dir)
    plt.close(fig)
    return paths


def plot_logit_by_steps(table: pd.DataFrame, method: str, plot_dir: Path = PLOTS) -> list[Path]:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for (test_set, label), g in table.groupby(["test_set", "label"], sort=False):
        ax.plot(g["steps"], g["mean_logit"], marker="o" if label == 0 else "x", ls="-" if label == 0 else "--",
                label=f"{test_set}: {'reals' if label == 0 else 'fakes'}")
    ax.set(xlabel="steps run (last effective step)", ylabel="mean final logit", xticks=sorted(table["steps"].unique()))
    ax.legend(fontsize=7)
    reals = table[table["label"] == 0]
    spread = reals.groupby("test_set")["mean_logit"].agg(lambda x: float(x.max() - x.min()))
    caption = (f"Mean final logit of {method} per number of steps a sample ran, reals (solid) and fakes "
               "(dashed), clean test crops. Spread of the reals' mean logit over the step counts: " + "; ".join(
                   f"{t} {v:.2f}" for t, v in spread.items()) + ". Reals should sit low whatever their step "
               "count; a real's logit that rises with its steps is the step count acting as a feature.")
    paths = _save_plot(fig, f"{method}_real_logit", caption, plot_dir)
    plt.close(fig)
    return paths


def plot_levels(counts: pd.DataFrame, truth: dict, name: str = "indicator_levels", plot_dir: Path = PLOTS) -> list[Path]:
    import matplotlib.pyplot as plt
    import seaborn as sns
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, ind in zip(axes, ("vqi", "fii")):
        g = counts[counts["indicator"] == ind]
        frac = g.assign(share=g["count"] / g.groupby("group")["count"].transform("sum"))
        sns.barplot(data=frac, x="level", y="share", hue="group", ax=ax)
        ax.set(title=f"{ind.upper()} level by true {g['group_by'].iloc[0]}", ylabel="share of crops")
        ax.legend(fontsize=7)
    def fmt(key):
        rho = (truth.get(key) or {}).get("rho")
        return "n/a" if rho is None or not np.isfinite(rho) else f"{rho:+.2f}"
    caption = ("VQI level histograms per true quality and FII level histograms per manipulation over all "
               "scored crops (Fig. 10-11 analogues; level 1 = best quality / most identifiable = fewest "
               "steps). How well each indicator tracks SynthFF's ground truth (Spearman rho, from the "
               f"indicators stage): VQI vs true CRF {fmt('vqi_vs_crf')} (expected negative), FII vs "
               f"true manipulation strength on fakes {fmt('fii_vs_strength_fakes')} (expected "
               f"positive), FII vs CRF {fmt('fii_vs_crf')}.")
    paths = _save_plot(fig, name, caption, plot_dir)
    plt.close(fig)
    return paths


def write_analysis(method_name: str, model, tests: list[tuple[str, pd.DataFrame, Path, object]],
                   indicator_tables: dict[str, tuple[pd.DataFrame, dict]], batch_size: int,
                   device="cpu", out_dir: Path | None = None) -> list[Path]:
    """The analysis CSVs and plots of a trained ``model`` (run on ``device``) over ``tests``
    [(test set name, manifest rows, faces dir, indicator)], plus the level histograms of
    ``indicator_tables`` {dataset: (indicators parquet frame, spearman dict)}; CSVs and plots all
    in ``out_dir`` when given (the pipeline's ``results/analysis/<method>/``), else ANALYSIS and PLOTS."""
    csv_dir, plot_dir = (Path(out_dir), Path(out_dir)) if out_dir is not None else (ANALYSIS, PLOTS)
    written, frames = [], []
    for name, rows, faces_dir, indicator in tests:
        df = step_outputs(model, rows, faces_dir, indicator, batch_size, device)
        if not df.empty:
            frames.append(df.assign(test_set=name))
    if frames:
        for kind, table_fn, plot in (("step_auc", step_auc, plot_step_auc), ("level_auc", level_cell_auc, plot_level_auc),
                                     ("real_logit", logit_by_steps, plot_logit_by_steps)):
            table = pd.concat([table_fn(f).assign(test_set=f["test_set"].iloc[0]) for f in frames], ignore_index=True)
            io.write_csv(csv_dir / f"{method_name}_{kind}.csv", table)
            written += [csv_dir / f"{method_name}_{kind}.csv", *plot(table, method_name, plot_dir)]
        counts = position_counts(pd.concat(frames, ignore_index=True))
        if not counts.empty:
            io.write_csv(csv_dir / f"{method_name}_positions.csv", counts)
            written += [csv_dir / f"{method_name}_positions.csv",
                        *plot_positions(counts, method_name, getattr(model, "channels", None), plot_dir)]
    for ds, (table, truth) in sorted(indicator_tables.items()):
        levels = level_counts(table)
        name = "indicator_levels" if ds == "ff" else f"indicator_levels_{ds}"
        io.write_csv(csv_dir / f"{name}.csv", levels)
        written += [csv_dir / f"{name}.csv", *plot_levels(levels, truth, name, plot_dir)]
    return written
