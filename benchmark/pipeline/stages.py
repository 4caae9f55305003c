"""The stages of DESIGN §3 as library functions.

Each DVC stage (``pipeline.graph`` declares them; ``dvc.yaml`` is rendered from it) calls one
CLI verb, which calls one function here. What is up to date is DVC's business
(``pipeline.executor``); a function here always does its work.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from benchmark import config, io, registry
from benchmark.data.selection import frames_subset, train_rows
from benchmark.errors import UserError
from benchmark.pipeline import inputs
from benchmark.pipeline.specs import (analysis_dir, dataset_cfg, dataset_class, distorted_name, faces_dir,
                                      indicators_json, model_dir, parse_train_set, protocol_train_sets,
                                      resolve_method, reused_stage, scores_path, test_sets, train_cfg)

WORK = Path(".benchmark/work")  # where a training runs (and resumes) until it has finished


def synthesize(params: dict, *, dataset: str = "ff") -> Path:
    """Generate a synthetic dataset: params ``synthff`` updated by ``datasets.<dataset>.synthff``
    (the stand-ins' seed, sizes, appearance) and its ``manipulations``."""
    cfg = dataset_cfg(params, dataset, check_root=False)
    if not hasattr(dataset_class(params, dataset), "synthesize"):
        raise UserError(f"datasets.{dataset} ({cfg['name']}) is not generated; point its root at the downloaded data")
    gen = {**params["synthff"], **(cfg.get("synthff") or {})}
    if cfg.get("manipulations"):
        gen["manipulations"] = cfg["manipulations"]
    root = Path(cfg["root"])
    dataset_class(params, dataset)(root=root).synthesize(gen)
    return root


def extract(params: dict, *, dataset: str) -> Path:
    from benchmark.data import extract as ex
    out = faces_dir(dataset)
    ex.extract_from_params(dataset_cfg(params, dataset), params["extract"], out)
    return out / "manifest.parquet"


def indicators(params: dict, *, dataset: str) -> Path:
    from benchmark import indicators as ind
    cfg = dataset_cfg(params, dataset)
    meta = Path(cfg["root"]) / "metadata.parquet"
    edges = cfg.get("indicator_edges")   # a test-only dataset is binned with its training set's edges
    ind.compute_indicators(faces_dir(dataset), Path("data/indicators"), dataset,
                           {**params["indicators"], "device": _device(params)},
                           metadata=meta if meta.is_file() else None,
                           edges_from=indicators_json(edges) if edges else None)
    return indicators_json(dataset)


def distort(params: dict, *, dataset: str, distortion: str, severity: int) -> Path:
    from benchmark.data.distorted_crops import distort_faces
    cfg = params["distort"]
    out = faces_dir(distorted_name(dataset, distortion, severity))
    distort_faces(dataset_class(params, dataset)(root=Path(dataset_cfg(params, dataset)["root"])), faces_dir(dataset),
                  out, distortion, severity, seed=cfg["seed"], qualities=cfg["qualities"], splits=cfg["splits"],
                  options=cfg.get("options"))
    return out / "manifest.parquet"


def train(params: dict, *, method: str, train_set: str, seed: int, reuse: str | None = None) -> Path:
    """Train ``method`` on ``train_set``; with ``reuse=<entry>`` (a variant's base trained in the
    same pipeline; the DAG gives ``reuse`` only where ``specs.reused_stage`` names something to
    take) take that entry's model when the options are the same, or its checkpoint at the end of
    the stage ``Method.reused_stage`` names when that is this method's last stage, or else that
    entry's stages up to that one, and train only the later ones (``engine.adopt``)."""
    import torch

    from benchmark import engine
    from benchmark.data.frames import TrainFrames
    from benchmark.data.jpeg import RandomJPEG
    from benchmark.data.views import compose
    out = model_dir(train_set, method, seed)
    taken = reused_stage(params, method, reuse) if reuse else None
    src = _base_dir(train_set, reuse, seed) if taken is not None else None
    torch.manual_seed(seed)
    model = build_method(params, method)
    cfg = {**train_cfg(params, method), **model.train_options()}  # the entry's train keys, those its options fix
    names = [n for n, _ in model.training_stages(cfg["epochs"])]
    if taken in ("final", names[-1]):
        _reuse(params, method, model, reuse, taken, src, train_set, seed, out)
        return out / "model.pt"
    given = _finished_stages(src, names[:names.index(taken) + 1]) if taken is not None else {}
    spec = parse_train_set(train_set, params)
    rows = train_rows(spec, inputs.manifest(spec["dataset"], spec["quality"], spec["split"]), train_set)
    augment = RandomJPEG() if cfg["jpeg_aug"] and cfg.get("views", "single") == "single" else None
    data = TrainFrames(rows, faces_dir(spec["dataset"]), seed=seed, augment=augment,
                       pair_manifest=inputs.pair_manifest(spec) if "quality_pair" in model.requires else None,
                       manipulation="manipulation_label" in model.requires)
    device = engine.distributed.init(params.get("launcher", "none"), params.get("device", "auto"))
    indicator = inputs.indicator(params, spec["dataset"], device)
    work = WORK / "__".join(out.parts)  # resumable across kills; DVC empties `out` before a stage runs
    summary = engine.train(model, compose(data, cfg.get("views", "single")), work, cfg, seed, levels=indicator.levels,
                           fingerprint=stage_key("train", params, method=method, train_set=train_set, seed=seed,
                                                 **({"reuse": reuse} if reuse else {})),
                           device=params.get("device", "auto"), launcher=params.get("launcher", "none"),
                           val_data=_val_frames(spec, cfg.get("val"), seed, train_set), given=given)
    if engine.distributed.is_main():
        _publish(work, out)
    if "diverged" in summary:
        d = summary["diverged"]
        print(f"warning: training of {method} (seed {seed}, {train_set}) diverged at stage {d['stage']}, epoch "
              f"{d['epoch']}, iteration {d['iteration']} ({d['what']}); stopped there, {out / 'model.pt'} holds "
              f"{d['kept']}, and the report marks its rows", file=sys.stderr)
    return out / "model.pt"


def _publish(work: Path, out: Path) -> None:
    """Move a finished training into its output: model.pt, train.json, history.csv and the last
    checkpoint of every stage but the final one, with its best-validation checkpoint when
    validation ran (a variant may reuse them: ``_reuse``)."""
    from benchmark.engine import stage_dirs
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    names = list(json.loads((work / "train.json").read_text()).get("recipe") or ["train"])
    for name in ("model.pt", "train.json", "history.csv"):
        (work / name).replace(out / name)
    for name, d in list(zip(names, stage_dirs(work, names)))[:-1]:
        last = max(d.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
        (out / name).mkdir()
        for ckpt in [last, *d.glob("best_*_epoch_*.pth")]:
            ckpt.replace(out / name / ckpt.name)
    shutil.rmtree(work)


def _base_dir(train_set: str, base: str, seed: int) -> Path:
    src = model_dir(train_set, base, seed)
    if not (src / "model.pt").is_file():
        raise UserError(f"{src}/model.pt not found; train {base} first (python -m benchmark train method={base} "
                        f"train_set={train_set} seed={seed})")
    return src


def _reuse(params: dict, method: str, model, base: str, stage: str, src: Path, train_set: str, seed: int,
           out: Path) -> None:
    """Write ``method``'s model from ``base``'s (``stage`` "final") or from the checkpoint at the
    end of ``stage``, this method's last: what training it would give."""
    from benchmark import engine
    from benchmark.engine.validate import best_checkpoint
    record = json.loads((src / "train.json").read_text())
    history = pd.read_csv(src / "history.csv")
    if stage == "final":
        state = io.load_tensors(src / "model.pt")
    else:
        ckpts = sorted((src / stage).glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
        if not ckpts:
            raise UserError(f"no checkpoint of stage {stage} under {src / stage}; retrain {base}")
        if params["train"].get("select", "last") == "best_val":  # the variant would end with that stage's best
            ckpts = [best_checkpoint(src / stage)]
        full = engine.method_state(ckpts[-1])
        state = {k: full[k] for k in model.state_dict()}
        model.load_state_dict(state)
        history = history[history["stage"].astype(str) == stage]
        record = {**record, "provenance": model.provenance(), "recipe": {stage: record.get("recipe", {}).get(stage)}}
    if out.exists():
        shutil.rmtree(out)
    io.save_tensors(out / "model.pt", state)
    io.write_csv(out / "history.csv", history)
    io.write_json(out / "train.json", {**record, "reused_from": str(src), "reused_stage": stage,
                                       "fingerprint": stage_key("train", params, method=method, train_set=train_set,
                                                                seed=seed, reuse=base)})


def _finished_stages(src: Path, names: list[str]) -> dict:
    """{stage: engine.adopt.FinishedStage} of the training published in ``src`` (``_publish``)."""
    from benchmark.engine.adopt import FinishedStage
    record = json.loads((src / "train.json").read_text())
    summaries = {s["stage"]: s for s in record.get("stages", [])}
    history = pd.read_csv(src / "history.csv")
    history = history.assign(stage=history["stage"].astype(str))
    out = {}
    for name in names:
        if name not in summaries or not (src / name).is_dir():
            raise UserError(f"{src} holds no finished stage {name} to start from (it was trained without keeping it); "
                            f"delete {src} and rerun its train stage")
        rows = json.loads(history[history["stage"] == name].drop(columns="stage").to_json(orient="records"))
        out[name] = FinishedStage(src / name, summaries[name],
                                  [{k: v for k, v in r.items() if v is not None} for r in rows])
    return out


def evaluate(params: dict, *, protocol: str, method: str, seed: int) -> list[Path]:
    from benchmark.evaluation import score as ev
    from benchmark.evaluation.indicator_cache import IndicatorCache
    proto = config.load_protocol(protocol)
    where = params["evaluate"].get("indicator_cache")
    cache = IndicatorCache(where) if where else None
    conditions = registry.get(registry.PERTURBATIONS, proto["conditions"])()
    device = _device(params)
    indicators = {d: inputs.indicator(params, d, device) for d in {t["dataset"] for t in proto["test_sets"]}}  # CLIP: build once
    if proto.get("distortions") and conditions.n_conditions != 1:
        raise UserError(f"protocols/{protocol}.yaml: with `distortions`, `conditions` must be one condition (e.g. none)")
    tests = [(t, frames_subset(inputs.manifest(t["faces"], t["quality"], t["split"]), proto.get("frames_per_video")))
             for t in test_sets(proto)]
    paths = []
    for train_set in protocol_train_sets(proto):
        model = _trained(params, method, train_set, seed)
        parts = []
        for test, rows in tests:
            df = ev.score(model, rows, faces_dir(test["faces"]), conditions, indicators[test["dataset"]],
                          params["evaluate"]["batch_size"], params["evaluate"]["seed"],
                          device=device, cfg=params["evaluate"], cache=cache)
            if "perturbation" in test:
                df = df.assign(perturbation=test["perturbation"], severity=test["severity"])
            parts.append(df.assign(test_set=test["name"]))
        out = pd.concat(parts, ignore_index=True).assign(protocol=protocol, method=method, seed=seed, train_set=train_set)
        out.attrs["compute"] = ev.compute(device, params["evaluate"])
        paths.append(scores_path(protocol, method, train_set, seed))
        io.write_parquet(paths[-1], out)
    return paths


def analyze(params: dict, *, method: str, seed: int = 0, protocol: str = "cross_quality") -> list[Path]:
    """Per-step AUC, FSM positions and indicator-level histograms of ``method`` trained on the
    protocol's train set (``benchmark.report.analysis``), into ``results/analysis/<method>/``."""
    import matplotlib
    matplotlib.use("Agg")
    from benchmark.report import analysis
    proto = config.load_protocol(protocol)
    train_set = protocol_train_sets(proto)[0]
    model = _trained(params, method, train_set, seed)
    device = _device(params)
    indicators = {d: inputs.indicator(params, d, device) for d in sorted({t["dataset"] for t in proto["test_sets"]})}
    tests = [(t["name"], frames_subset(inputs.manifest(t["dataset"], t["quality"], t["split"]),
                                       proto.get("frames_per_video")), faces_dir(t["dataset"]), indicators[t["dataset"]])
             for t in proto["test_sets"]]
    tables = {}
    for ds in indicators:
        table = Path("data/indicators") / f"{ds}.parquet"
        if table.is_file():
            hint = f"`python -m benchmark indicators dataset={ds}`"
            tables[ds] = (io.read_table(table, hint), io.read_json(indicators_json(ds), hint).get("spearman") or {})
    out = analysis_dir(method)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)  # a DVC output even for a model without per-step outputs
    return analysis.write_analysis(method, model, tests, tables, params["evaluate"]["batch_size"], device, out_dir=out)


def cost(params: dict) -> Path:
    """results/cost.csv: parameters, GFLOPs, CPU images/s, peak training memory (benchmark/evaluation/cost.py)
    of every grid method, a variant with its resolved options."""
    from benchmark.evaluation import cost as cost_
    resolved = {m: dict(zip(("registered", "options"), resolve_method(params, m))) for m in params["grid"]["methods"]}
    flat = {**params, "methods": {m: {"registered": r["registered"], **r["options"]} for m, r in resolved.items()}}
    return cost_.write_cost_table(flat)


def plots(params: dict) -> list[Path]:
    """t-SNE and Grad-CAM figures of the grid's trained models (params ``plots``) in results/plots."""
    from benchmark.report import model_plots
    cfg = params["plots"]
    spec = parse_train_set(cfg["train_set"], params)
    models = {m: _trained(params, m, cfg["train_set"], params["grid"]["seeds"][0]) for m in params["grid"]["methods"]}
    device = _device(params)
    figs = model_plots.make(models, inputs.manifest(spec["dataset"], cfg["quality"], "test"), faces_dir(spec["dataset"]),
                            inputs.indicator(params, spec["dataset"], device), cfg, Path("results/plots"), device)
    return [p for f in figs for p in (f.png, f.png.with_suffix(".svg"), f.png.with_suffix(".txt"))]


def metrics(params: dict, *, protocol: str) -> list[Path]:
    """One protocol's metrics (results/metrics/<P>.csv), significance tests, DVC headline AUCs
    (results/metrics/<P>.json) and curves, of the grid's methods and seeds only."""
    from benchmark.pipeline import reporting
    return reporting.protocol_metrics(params, protocol)


def report(params: dict, protocols: list[str] = (), methods: list[str] = ()) -> list[Path]:
    """Every protocol's metrics in one page, the tables, figures and DVC plot series, of the
    grid's protocols and methods (plus any named here)."""
    from benchmark.pipeline import reporting
    return reporting.write(params, protocols, methods)


# ---------------------------------------------------------------- helpers
def stage_key(verb: str, params: dict, **args) -> str:
    """The fingerprint of a stage run with these arguments: its params values, code and the keys
    of the stages it reads (the engine resumes only a training with the same key)."""
    from benchmark.pipeline import fingerprint
    return fingerprint.stage_key(verb, params, **args)


def build_method(params: dict, name: str):
    root, opts = resolve_method(params, name)
    return registry.get(registry.METHODS, root)(**opts)


def _trained(params: dict, method: str, train_set: str, seed: int):
    """The trained ``method`` (one line naming model.pt and the train command when it is missing,
    truncated, not weights-only or made with another configuration)."""
    from benchmark import engine
    return engine.load_trained(build_method(params, method), model_dir(train_set, method, seed),
                               f"`python -m benchmark train method={method} train_set={train_set} seed={seed}`")


def _val_frames(spec: dict, val: dict | None, seed: int, name: str):
    """The train set's val split (params ``train.val``: quality, frames_per_video), un-augmented."""
    from benchmark.data.frames import TrainFrames
    if not val:
        return None
    quality = val.get("quality") or spec["quality"]
    rows = train_rows(spec, inputs.manifest(spec["dataset"], quality, "val"), name)
    return TrainFrames(frames_subset(rows, val.get("frames_per_video")), faces_dir(spec["dataset"]), seed=seed)


def _device(params: dict):
    """params.yaml ``device`` as a torch device (benchmark.engine.device)."""
    from benchmark.engine.device import resolve
    return resolve(params.get("device", "auto"))


STAGE_FUNCTIONS = {"synthesize": synthesize, "extract": extract, "indicators": indicators, "distort": distort,
                   "train": train, "evaluate": evaluate, "analyze": analyze, "metrics": metrics, "cost": cost,
                   "plots": plots, "report": report}
