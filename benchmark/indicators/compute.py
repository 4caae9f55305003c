"""The library function behind the CLI verb ``indicators dataset=D``."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmark import io
from benchmark.data.frames import crops_tensor
from benchmark.errors import UserError
from benchmark.indicators.binning import IndicatorLevels
from benchmark.indicators.build import build_indicator, load_indicator

DEFAULT_FIT_QUERY = "split == 'train' and quality == 'c23'"
OUT_COLUMNS = ["video_id", "frame_idx", "quality", "split", "label", "manipulation",
               "vqi", "fii", "vqi_level", "fii_level"]


def _read(x, what: str) -> pd.DataFrame:
    if isinstance(x, pd.DataFrame):
        return x
    return io.read_table(x, f"the stage that writes the {what} first")


def load_crops(faces_dir, rows: pd.DataFrame) -> torch.Tensor:
    """RGB uint8 (N, 3, H, W) of the crops of manifest ``rows`` (read from the crop store)."""
    return crops_tensor(faces_dir, rows)


def score_manifest(manifest: pd.DataFrame, faces_dir, backend, batch_size: int = 256):
    """``(vqi, fii)`` float arrays for every manifest row, scored in batches."""
    vqi, fii = [], []
    for i in range(0, len(manifest), batch_size):
        s = backend.score(load_crops(faces_dir, manifest.iloc[i:i + batch_size]))
        vqi.append(s["vqi"])
        fii.append(s["fii"])
    return (np.concatenate(vqi) if vqi else np.zeros(0)), (np.concatenate(fii) if fii else np.zeros(0))


def _spearman(x, y) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3 or np.unique(x[ok]).size < 2 or np.unique(y[ok]).size < 2:
        return {"rho": None, "p": None, "n": int(ok.sum())}
    from scipy.stats import spearmanr  # here: scipy.stats costs ~1 s of every verb's start-up
    r = spearmanr(x[ok], y[ok])
    return {"rho": float(r.statistic), "p": float(r.pvalue), "n": int(ok.sum())}


def truth_correlations(scores: pd.DataFrame, metadata: pd.DataFrame) -> dict:
    """Spearman rho of vqi with the true CRF (expected negative), of fii with the true
    manipulation strength on fakes (expected positive) and of fii with CRF (compression hides
    traces: expected negative or none); rows joined on video_id/quality/frame_idx."""
    keys = ["video_id", "quality", "frame_idx"]
    missing = [c for c in keys + ["crf", "strength"] if c not in metadata.columns]
    if missing:
        raise UserError(f"SynthFF metadata lacks columns {missing}; re-run the `synthesize` stage")
    m = scores.merge(metadata[keys + ["crf", "strength"]], on=keys, how="left")
    fakes = m[m["label"] == 1]
    out = {"vqi_vs_crf": _spearman(m["vqi"], m["crf"]),
           "fii_vs_crf": _spearman(m["fii"], m["crf"]),
           "fii_vs_strength_fakes": _spearman(fakes["fii"], fakes["strength"]),
           "n_matched": int(m["crf"].notna().sum())}
    out["vqi_vs_crf_by_label"] = {str(lab): _spearman(g["vqi"], g["crf"]) for lab, g in m.groupby("label")}
    out["fii_vs_strength_fakes_by_quality"] = {
        str(q): _spearman(g["fii"], g["strength"]) for q, g in fakes.groupby("quality")}
    return out


def compute_indicators(faces_dir, out_dir, dataset: str, cfg: Mapping, *, metadata=None,
                       manifest=None, fit_query: str = DEFAULT_FIT_QUERY, edges_from=None,
                       backend=None, batch_size: int = 256) -> dict:
    """Score every face crop, fit the level edges on the training rows, write both outputs.

    Args:
        faces_dir: ``data/faces/<D>/``; its ``manifest.parquet`` lists the crops, whose
            ``path`` column is relative to it.
        out_dir: ``data/indicators``; writes ``<dataset>.parquet`` (one row per crop: video_id,
            frame_idx, quality, split, label, manipulation, vqi, fii, vqi_level, fii_level) and
            ``<dataset>.json`` (backend description, binning, k, edges, fitted_on, n_scored,
            summaries, and Spearman correlations when ``metadata`` is given), atomically.
        dataset: the dataset name ``D``.
        cfg: params.yaml ``indicators`` (backend, model, weights, logit_scale, prompt_period,
            binning, k, round_percent).
        metadata: SynthFF ``metadata.parquet`` (path or DataFrame) or None: adds Spearman rho of
            vqi with the true CRF and of fii with the true manipulation strength (fakes).
        manifest: a manifest DataFrame or path instead of ``faces_dir/manifest.parquet``.
        fit_query: pandas query selecting the rows the quantile edges are fitted on (the
            training split; the paper fits on training data only).
        edges_from: another dataset's ``<D>.json`` whose edges to reuse instead of fitting --
            for test-only datasets (Celeb-DF, ...), which must be binned with the training
            dataset's edges.  Its backend description must match this backend's.
        backend: an already built backend (default: ``build_indicator(cfg)``).

    Returns the dict written to ``<dataset>.json``.
    """
    faces_dir = Path(faces_dir)
    out_parquet = Path(out_dir) / f"{dataset}.parquet"
    out_json = Path(out_dir) / f"{dataset}.json"
    if manifest is None:
        manifest = faces_dir / "manifest.parquet"
    man = _read(manifest, "face manifest").reset_index(drop=True)
    missing = [c for c in OUT_COLUMNS[:6] + ["path", "offset", "nbytes", "crc32"] if c not in man.columns]
    if missing:
        raise UserError(f"face manifest lacks columns {missing}; re-run the `extract` stage")
    backend = backend or build_indicator(cfg)
    vqi, fii = score_manifest(man, faces_dir, backend, batch_size)
    try:
        fit_mask = man.eval(fit_query).to_numpy(bool)
    except Exception as e:  # noqa: BLE001 - a bad query string is user input
        raise UserError(f"indicator fit query {fit_query!r} failed on the manifest: {e}") from e
    binning, k = cfg.get("binning", "quantile"), int(cfg.get("k", 5))
    if edges_from is not None:
        levels = load_indicator(edges_from, cfg, backend=backend)
        fitted_on = {"edges_from": str(edges_from), "n": 0}
    else:
        if binning == "quantile" and not fit_mask.any():
            raise UserError(f"no rows of {dataset}'s face manifest match the indicator fit query "
                            f"{fit_query!r}; extract that split/quality, or reuse the training "
                            f"dataset's edges (edges_from)")
        levels = IndicatorLevels.fit(vqi[fit_mask], fii[fit_mask], binning, k, backend,
                                     round_percent=cfg.get("round_percent", False))
        fitted_on = {"query": fit_query, "n": int(fit_mask.sum()) if binning == "quantile" else 0}
    vl, fl = (t.numpy() for t in levels.levels_from_scores(vqi, fii))
    df = man[OUT_COLUMNS[:6]].copy()
    df["vqi"], df["fii"], df["vqi_level"], df["fii_level"] = vqi, fii, vl, fl
    summary = {"dataset": dataset, **backend.describe(), **levels.to_dict(),
               "fitted_on": fitted_on,
               "n_scored": int(len(df)),
               "fit_level_counts": {
                   "vqi": np.bincount(vl[fit_mask], minlength=levels.k + 1)[1:].tolist(),
                   "fii": np.bincount(fl[fit_mask], minlength=levels.k + 1)[1:].tolist()},
               "mean_by_quality": df.groupby("quality")[["vqi", "fii"]].mean().to_dict("index"),
               "mean_by_manipulation": df.groupby("manipulation")[["vqi", "fii"]].mean().to_dict("index")}
    if metadata is not None:
        summary["spearman"] = truth_correlations(df, _read(metadata, "SynthFF metadata"))
    io.write_parquet(out_parquet, df)
    io.write_json(out_json, summary)
    return summary
