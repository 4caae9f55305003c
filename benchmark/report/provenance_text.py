"""Provenance text for reports: the line under every table and the report's warning header.

The provenance dict (all keys optional; missing ones are reported as "unknown", never guessed):

    {
      "title": "DPL benchmark on the embedded SynthFF dataset",
      "dataset": {"name": "synthff", "synthetic": True, "root": "data/raw/synthff",
                  "label": "SynthFF"},              # label optional (defaults below)
      "methods": {                                  # table row order = this order
        "baseline": {"backbone": "convnext_atto", "weights": "random init", "label": "Baseline",
                     "trained_on": {"device": "cpu", "amp": "none", "world_size": 1, ...},  # train.json
                     "evaluated_on": {"device": "cpu", "amp": "none"},  # the scores' metadata
                     "recipe": "shared: Adam lr 0.001, batch 32, 10 epochs"},   # recipe optional
        "dpl": {"backbone": "convnext_atto", "weights": "random init", "label": "DPL",
                "setting": "reading release"},   # optional: the method's own one-line setting
      },
      "indicator": {"backend": "fallback", "model": "ViT-B-32", "weights": None,
                    "binning": "quantile", "k": 5, "logit_scale": False},
      "seeds": [0],
      "commit": "abc123",                           # e.g. `git describe --always --dirty`
      "dvc_lock": {"train@baseline-0": ["md5…"]},   # output md5s per stage from dvc.lock
      "generated": None,                            # a timestamp string only if wanted
      "notes": ["free text shown in the report header"],
    }

A method's weights count as random initialisation when ``weights`` is None or says "random";
the caller should write "random init" or the pretrained source (a path, "imagenet"). A method
without a ``weights`` key is shown as "weights unknown" and named in a header warning.
"""
from __future__ import annotations

DATASET_LABELS = {"synthff": "SynthFF", "ffpp": "FaceForensics++"}
NOT_COMPARABLE = "these numbers are NOT comparable to the paper's."


def dataset_text(prov: dict) -> str:
    ds = prov.get("dataset") or {}
    name = ds.get("name")
    label = ds.get("label") or DATASET_LABELS.get(str(name), name) or "unknown"
    if ds.get("synthetic"):
        return f"{label} (synthetic stand-in, not FaceForensics++)"
    return str(label)


def faces_text(prov: dict) -> str:
    """Which faces the crops hold: the detector and the policy (``datasets.<id>.faces``)."""
    ds = prov.get("dataset") or {}
    if not ds.get("face_detector"):
        return ""
    return f"faces: {ds['face_detector']}, {ds.get('faces') or 'track'} policy"


def is_random_init(method_info: dict | None) -> bool:
    info = method_info or {}
    return "weights" in info and (info["weights"] is None or "random" in str(info["weights"]).lower())


def method_text(name: str, info: dict | None) -> str:
    """``name: backbone (weights[; setting])``; ``setting`` is the line a method's
    ``provenance()`` gives for what its rows depend on beyond the backbone (e.g. DPL's reading,
    the baseline's loss)."""
    info = info or {}
    weights = ("weights unknown" if "weights" not in info
               else "random init" if is_random_init(info) else info["weights"])
    setting = f"; {info['setting']}" if info.get("setting") else ""
    recipe = f"; recipe {info['recipe']}" if info.get("recipe") else ""
    return f"{name}: {info.get('backbone', 'unknown backbone')} ({weights}{setting}{recipe})"


def _compute(c: dict | None) -> str:
    if not c:
        return "unknown"
    text = f"{c.get('device', '?')}, {'fp32' if c.get('amp', 'none') == 'none' else c['amp'] + ' autocast'}"
    if c.get("channels_last"):
        text += ", channels_last"
    if int(c.get("world_size", 1)) > 1:
        text += f", {c['world_size']} processes ({c.get('launcher')})"
    if c.get("deterministic") is False:
        text += ", non-deterministic"
    if c.get("nondeterministic_ops"):
        text += ", no deterministic kernel for " + "/".join(c["nondeterministic_ops"])
    return text


def compute_text(prov: dict, methods: list[str]) -> str:
    """Where and at which precision the methods were trained and evaluated (one entry when all agree)."""
    known = prov.get("methods") or {}
    per = {m: f"trained on {_compute((known.get(m) or {}).get('trained_on'))}, "
              f"evaluated on {_compute((known.get(m) or {}).get('evaluated_on'))}" for m in methods}
    if len(set(per.values())) == 1:
        return "compute: " + next(iter(per.values()), "unknown")
    return "compute: " + "; ".join(f"{m} {t}" for m, t in per.items())


def indicator_text(prov: dict) -> str:
    ind = prov.get("indicator") or {}
    if not ind:
        return "indicators: unknown"
    parts = [f"backend {ind.get('backend', 'unknown')}"]
    if ind.get("model"):
        parts.append(f"model {ind['model']}")
    if ind.get("binning"):
        parts.append(f"{ind['binning']} binning")
    if ind.get("k") is not None:
        parts.append(f"K = {ind['k']}")
    if "logit_scale" in ind:
        parts.append(f"logit scale {'on' if ind['logit_scale'] else 'off'}")
    return "indicators: " + ", ".join(parts)


def _seeds(seeds) -> str:
    seeds = list(seeds or [])
    if not seeds:
        return "seeds: unknown"
    mean = f" (mean over {len(seeds)})" if len(seeds) > 1 else ""
    return "seeds: " + ", ".join(map(str, seeds)) + mean


def table_parts(prov: dict, methods: list[str], seeds=None, train_sets=(),
                conditions: str = "") -> list[str]:
    """The provenance line of one table, as parts (HTML joins with " · ", LaTeX with "; ")."""
    known = prov.get("methods") or {}
    parts = [f"dataset: {dataset_text(prov)}"] + [t for t in [faces_text(prov)] if t]
    if train_sets:
        parts.append("train set: " + ", ".join(train_sets))
    parts.append("backbones: " + "; ".join(method_text(m, known.get(m)) for m in methods))
    parts.append(compute_text(prov, methods))
    parts.append(indicator_text(prov))
    parts.append(_seeds(seeds if seeds else prov.get("seeds")))
    if conditions:
        parts.append(f"AUC = {conditions}")
    parts.append(f"commit: {prov.get('commit') or 'unknown'}")
    if prov.get("generated"):
        parts.append(f"generated: {prov['generated']}")
    return parts


def warnings(prov: dict) -> list[str]:
    """Header warnings: synthetic dataset and/or randomly initialised weights."""
    out = []
    ds = prov.get("dataset") or {}
    if ds.get("synthetic"):
        out.append(f"Dataset is {dataset_text(prov)}: {NOT_COMPARABLE}")
    methods = prov.get("methods") or {}
    rand = [m for m in methods if is_random_init(methods[m])]
    if rand:
        out.append("Randomly initialised weights (no pretrained backbone) for "
                   f"{', '.join(rand)}: {NOT_COMPARABLE}")
    unknown = [m for m in methods if "weights" not in (methods[m] or {})]
    if unknown:
        out.append(f"Weights not recorded for {', '.join(unknown)}: comparability unknown.")
    return out


def details(prov: dict) -> list[tuple[str, str]]:
    """(key, value) pairs for the report's provenance section."""
    ds = prov.get("dataset") or {}
    rows = [("dataset", dataset_text(prov))]
    if ds.get("root"):
        rows.append(("dataset root", str(ds["root"])))
    if faces_text(prov):
        rows.append(("faces", faces_text(prov).split(": ", 1)[1]))
    for m, info in (prov.get("methods") or {}).items():
        rows.append((f"method {m}", method_text(m, info).split(": ", 1)[1]))
        rows.append((f"compute {m}", compute_text(prov, [m]).split(": ", 1)[1]))
    rows.append(("indicators", indicator_text(prov).split(": ", 1)[1]))
    ind = prov.get("indicator") or {}
    if ind.get("weights"):
        rows.append(("indicator weights", str(ind["weights"])))
    rows.append(("seeds", _seeds(prov.get("seeds")).split(": ", 1)[1]))
    rows.append(("commit", str(prov.get("commit") or "unknown")))
    lock = prov.get("dvc_lock")
    if lock is not None:
        rows.append(("dvc.lock", "; ".join(f"{stage}: {', '.join(h[:8] for h in hashes if h) or '-'}"
                                           for stage, hashes in sorted(lock.items()))
                     or "no dvc.lock (not run through dvc repro)"))
    if prov.get("generated"):
        rows.append(("generated", str(prov["generated"])))
    return rows
