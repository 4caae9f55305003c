"""Gathers where a table came from (dataset, backbone and weights per method,
indicator, seeds, commit) from params and the stage outputs on disk; the
report formats it (benchmark.report.provenance_text) under every table.

Rows to be read with care are marked (``marks``: method -> "†") and explained in ``notes``: a
training that diverged (its ``train.json`` says where, and which checkpoint was scored
instead), scores that are not finite (their AUCs are left empty), and a method whose
``provenance()`` carries a ``caveat`` (what its row does and does not measure in this setting)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import yaml

from benchmark import io
from benchmark.data.layout import partial_note
from benchmark.engine import optim
from benchmark.pipeline import specs

MARK = "†"


def _train_record(ts: str, method: str, seed: int) -> dict:
    rec = specs.model_dir(ts, method, seed) / "train.json"
    rerun = f"`python -m benchmark train method={method} train_set={ts} seed={seed}`"
    return io.read_json(rec, rerun) if rec.is_file() else {}


def flagged(methods: list[str], seeds: list[int], train_sets: list[str], scores=None) -> tuple[list[str], dict]:
    """(notes, marks) for caveats, diverged trainings and non-finite scores (module docstring)."""
    notes, marks = [], {}
    for m in methods:
        records = {(ts, seed): _train_record(ts, m, seed) for ts in train_sets for seed in seeds}
        caveats = {(r.get("provenance") or {}).get("caveat") for r in records.values()}
        for caveat in sorted(c for c in caveats if c):
            marks[m] = MARK
            notes.append(f"{MARK} {m}: {caveat}")
        for (ts, seed), record in records.items():
            d = record.get("diverged")
            if d:
                marks[m] = MARK
                notes.append(f"{MARK} {m} (seed {seed}, {ts}): training diverged at stage {d['stage']}, epoch "
                             f"{d['epoch']}, iteration {d['iteration']} ({d['what']}); its rows score "
                             f"{d['kept']}")
    if scores is not None and len(scores):
        bad = scores[~np.isfinite(scores["score"].to_numpy(dtype=float))]
        for (m, ts, seed), part in bad.groupby(["method", "train_set", "seed"], sort=True):
            total = int(((scores["method"] == m) & (scores["train_set"] == ts) & (scores["seed"] == seed)).sum())
            marks[str(m)] = MARK
            notes.append(f"{MARK} {m} (seed {seed}, {ts}): {len(part)} of {total} scores are not finite (NaN or "
                         f"inf); the AUCs they enter are left empty")
    return notes, marks


def collect(params: dict, methods: list[str], seeds: list[int], train_sets: list[str], scores=None) -> dict:
    ff = params["datasets"]["ff"]
    ind_file = specs.indicators_json("ff")
    ind = io.read_json(ind_file, "`python -m benchmark indicators dataset=ff`") if ind_file.is_file() else {}
    per_method = {}
    for m in methods:
        cfg = params["methods"].get(m, {})
        info = {"backbone": cfg.get("backbone", "?"), "weights": "random init" if not cfg.get("pretrained") else Path(cfg["pretrained"]).name}
        for ts in train_sets:  # what the trained model itself recorded wins over params
            rec = _train_record(ts, m, seeds[0]) if seeds else {}
            if rec:
                info.update(rec.get("provenance", {}))
                info["trained_on"] = rec.get("compute")
                if rec.get("recipe"):  # per stage, as the engine ran it (engine.optim)
                    info["recipe"] = "; ".join(f"{stage} {optim.describe(r)}" if len(rec["recipe"]) > 1
                                               else optim.describe(r) for stage, r in rec["recipe"].items())
                break
        info["evaluated_on"] = _scores_compute(m)
        per_method[m] = info
    flag_notes, marks = flagged(methods, seeds, train_sets, scores)
    return {
        "title": params["report"]["title"],
        "dataset": {"name": ff["name"], "synthetic": specs.dataset_class(params, "ff").synthetic, "root": ff["root"],
                    "face_detector": ff.get("face_detector"), "faces": ff.get("faces", "track")},
        "methods": per_method,
        "indicator": {"backend": ind.get("backend", "?"), "model": ind.get("model"), "weights": ind.get("weights"),
                      "binning": params["indicators"]["binning"], "k": params["indicators"]["k"],
                      "logit_scale": params["indicators"]["logit_scale"]},
        "seeds": seeds,
        "notes": _indicator_notes(ind) + partial_notes(params) + flag_notes,
        "marks": marks,
        "commit": git_commit(),
        "dvc_lock": _dvc_lock_hashes(),
    }


def _scores_compute(method: str) -> dict | None:
    """The device/precision a method's scores files record (``evaluation.score.compute``)."""
    import pyarrow.parquet as pq
    for f in sorted(Path("results/scores").glob(f"*/{method}/*.parquet")):
        meta = pq.read_schema(f).metadata or {}
        attrs = json.loads(meta.get(b"PANDAS_ATTRS", b"{}"))
        if attrs.get("compute"):
            return attrs["compute"]
    return None


def _indicator_notes(ind: dict) -> list[str]:
    """How well the indicators track the truth, where the dataset knows it (SynthFF)."""
    rho = ind.get("spearman", {})
    notes = []
    if "vqi_vs_crf" in rho:
        notes.append(f"VQI vs true compression (CRF): Spearman rho = {rho['vqi_vs_crf']['rho']:.3f} "
                     f"over {rho['vqi_vs_crf']['n']} crops (negative = VQI falls as compression rises)")
    if "fii_vs_strength_fakes" in rho:
        notes.append(f"FII vs true manipulation strength (fakes): Spearman rho = "
                     f"{rho['fii_vs_strength_fakes']['rho']:.3f}")
    return notes


def partial_notes(params: dict) -> list[str]:
    """One line per dataset whose extraction ran on an incomplete tree (allow_partial)."""
    notes = []
    for name in params["datasets"]:
        path = specs.faces_dir(name) / "extract_report.json"
        hint = f"`python -m benchmark extract dataset={name}`"
        partial = io.read_json(path, hint).get("partial") if path.is_file() else None
        if partial:
            notes.append(f"datasets.{name}: {partial_note(partial)}")
    return notes


def _dvc_lock_hashes() -> dict:
    """md5 of each stage's outputs as dvc.lock recorded them (empty outside DVC)."""
    path = Path("dvc.lock")
    if not path.is_file():
        return {}
    lock = yaml.safe_load(path.read_text()) or {}
    return {stage: [o.get("md5", "") for o in body.get("outs", [])] for stage, body in lock.get("stages", {}).items()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
