"""The report stage: gathers the grid's scores, analyses, training histories and provenance
and hands them to the libraries that compute metrics (``benchmark.evaluation``) and render
the page, the tables, the figures and DVC's metrics and plot series (``benchmark.report``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark import config, io
from benchmark.errors import UserError
from benchmark.pipeline import specs

RESULTS = Path("results")


def _order(params: dict):
    order = {m: i for i, m in enumerate(params["grid"]["methods"])}
    return lambda m: (order.get(m, len(order)), m)


def grid_rows(params: dict, protocols=(), methods=()) -> dict[str, list[str]]:
    """{protocol: its methods} of the grid, plus the protocols and methods named here."""
    out = {}
    for p in [*params["grid"]["protocols"], *(p for p in protocols if p not in params["grid"]["protocols"])]:
        listed = specs.protocol_methods(config.load_protocol(p)) or list(params["grid"]["methods"])
        out[p] = listed + [m for m in methods if m not in listed]
    return out


def histories(params: dict, rows: dict[str, list[str]]) -> dict[str, pd.DataFrame]:
    """{method: history.csv of its model at the grid's first seed} for every method with one."""
    seed, out = params["grid"]["seeds"][0], {}
    for p, methods in rows.items():
        train_set = specs.protocol_train_sets(config.load_protocol(p))[0]
        for m in methods:
            path = specs.model_dir(train_set, m, seed) / "history.csv"
            if m not in out and path.is_file() and path.stat().st_size > 1:
                out[m] = pd.read_csv(path)
    return out


def write(params: dict, protocols=(), methods=()) -> list[Path]:
    from benchmark.evaluation import compare, metrics
    from benchmark.pipeline import provenance
    from benchmark.report import render_report, series
    rows = grid_rows(params, protocols, methods)
    files = sorted(specs.scores_path(p, m, ts, s) for p, ms in rows.items() for m in ms
                   for ts in specs.protocol_train_sets(config.load_protocol(p)) for s in params["grid"]["seeds"])
    files = [f for f in files if f.is_file()]
    if not files:
        raise UserError("no scores under results/scores for the grid; run `python -m benchmark run` or dvc repro first")
    scores = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    mcfg = params["metrics"]
    table = metrics.compute_metrics(scores, n_boot=mcfg["bootstrap"], boot_seed=mcfg["seed"])
    protos = {p: config.load_protocol(p) for p in rows if p in set(table["protocol"])}
    io.write_csv(RESULTS / "metrics.csv", table)
    io.write_csv(RESULTS / "significance.csv", compare.significance(scores, mcfg["reference_method"]))
    io.write_csv(RESULTS / "metrics_seeds.csv", compare.seed_summary(table))
    io.write_json(RESULTS / "metrics.json", series.headline(table, protos))
    shown = sorted(table["method"].unique(), key=_order(params))
    prov = provenance.collect(params, shown, sorted(int(s) for s in table["seed"].unique()),
                              sorted(table["train_set"].unique()))
    hist = histories(params, rows)
    analyses = [specs.analysis_dir(m) for m in shown if specs.analysis_dir(m).is_dir()]
    rocs = series.roc_frames(scores, protos)
    written = series.write_series(table, rocs, protos, hist, analyses, RESULTS / "curves")
    paths = render_report(table, prov, protos, RESULTS, histories=hist, analysis_dirs=analyses, rocs=rocs,
                          **params["report"]["inputs"])
    return [RESULTS / n for n in ("metrics.csv", "metrics.json", "significance.csv", "metrics_seeds.csv")] \
        + written + paths
