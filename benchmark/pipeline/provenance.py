"""Gathers where a table came from (dataset, backbone and weights per method,
indicator, seeds, commit) from params and the stage outputs on disk; the
report formats it (benchmark.report.provenance_text) under every table."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from benchmark.data.layout import partial_note
from benchmark.pipeline import specs


def collect(params: dict, methods: list[str], seeds: list[int], train_sets: list[str]) -> dict:
    ff = params["datasets"]["ff"]
    ind_file = specs.indicators_json("ff")
    ind = json.loads(ind_file.read_text()) if ind_file.is_file() else {}
    per_method = {}
    for m in methods:
        cfg = params["methods"].get(m, {})
        info = {"backbone": cfg.get("backbone", "?"), "weights": "random init" if not cfg.get("pretrained") else Path(cfg["pretrained"]).name}
        for ts in train_sets:  # what the trained model itself recorded wins over params
            rec = specs.model_dir(ts, m, seeds[0]) / "train.json" if seeds else None
            if rec and rec.is_file():
                info.update(json.loads(rec.read_text()).get("provenance", {}))
                break
        per_method[m] = info
    return {
        "title": params["report"]["title"],
        "dataset": {"name": ff["name"], "synthetic": specs.dataset_class(params, "ff").synthetic, "root": ff["root"],
                    "face_detector": ff.get("face_detector")},
        "methods": per_method,
        "indicator": {"backend": ind.get("backend", "?"), "model": ind.get("model"), "weights": ind.get("weights"),
                      "binning": params["indicators"]["binning"], "k": params["indicators"]["k"],
                      "logit_scale": params["indicators"]["logit_scale"]},
        "seeds": seeds,
        "notes": _indicator_notes(ind) + partial_notes(params),
        "commit": git_commit(),
        "dvc_lock": _dvc_lock_hashes(),
    }


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
        partial = json.loads(path.read_text()).get("partial") if path.is_file() else None
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
