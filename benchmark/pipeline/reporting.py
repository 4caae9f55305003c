"""The metrics and report stages: gather scores, analyses, training histories and provenance and
hand them to the libraries that compute metrics (``benchmark.evaluation``) and render the page,
the tables, the figures and DVC's metrics and plot series (``benchmark.report``).

``protocol_metrics`` (stage ``metrics-<P>``) computes one protocol's metrics, so a change to one
method recomputes only the protocols it is in, and ``run protocol=P`` (an experiment too) ends
with P's own headline AUCs; ``write`` (stage ``report``) puts every protocol into one page.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark import config, io
from benchmark.errors import UserError
from benchmark.pipeline import specs
from benchmark.pipeline.specs import MODEL_CURVES, RESULTS, metrics_paths  # noqa: F401  (where the stages write)


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


def score_files(params: dict, protocol: str, methods=()) -> list[Path]:
    """The score files of ``protocol``'s grid rows (plus ``methods``) on disk; a row scored by
    another protocol reads that one's (``graph.score_sources``)."""
    from benchmark.pipeline import graph
    all_rows = grid_rows(params, [protocol], methods)
    sources = graph.score_sources({p: config.load_protocol(p) for p in all_rows}, all_rows)
    files = [specs.scores_path(sources[(protocol, m)], m, ts, s) for m in all_rows[protocol]
             for ts in specs.protocol_train_sets(config.load_protocol(protocol)) for s in params["grid"]["seeds"]]
    return [f for f in files if f.is_file()]


def read_scores(files: list[Path], columns=None) -> pd.DataFrame:
    from benchmark.pipeline import inputs
    return pd.concat([io.read_table(f, inputs.scores_stage(f), inputs.SCORE_COLUMNS)[columns or slice(None)]
                      for f in files], ignore_index=True)


def protocol_metrics(params: dict, protocol: str, methods=()) -> list[Path]:
    from benchmark.evaluation import compare, metrics
    from benchmark.report import series
    proto = config.load_protocol(protocol)
    files = score_files(params, protocol, methods)
    if not files:
        raise UserError(f"no scores of protocol {protocol} under results/scores; run `python -m benchmark run "
                        f"protocol={protocol}` first")
    scores = read_scores(files).assign(protocol=protocol)
    mcfg, out = params["metrics"], metrics_paths(protocol)
    table = metrics.compute_metrics(scores, n_boot=mcfg["bootstrap"], boot_seed=mcfg["seed"])
    io.write_csv(out["csv"], table)
    io.write_csv(out["significance"], compare.significance(scores, mcfg["reference_method"], mcfg["bootstrap"],
                                                           mcfg["seed"]))
    io.write_json(out["json"], series.headline(table, {protocol: proto}).get(protocol, {}))
    curves = series.protocol_series(table, series.roc_frames(scores, {protocol: proto}), protocol, out["curves"])
    return [out["csv"], out["json"], out["significance"], *curves]


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


def write(params: dict, protocols=(), methods=(), out_dir: Path = RESULTS) -> list[Path]:
    """The report of the grid's protocols (plus any named here) into ``results/``; with another
    ``out_dir``, of the named protocols only (``run protocol=P`` before the grid is complete)."""
    from benchmark.evaluation import comparable, compare
    from benchmark.pipeline import provenance
    from benchmark.report import render_report, series
    out_dir = Path(out_dir)
    rows = grid_rows(params, protocols, methods)
    if out_dir != RESULTS:
        rows = {p: rows[p] for p in protocols}
    done = [p for p in rows if metrics_paths(p)["csv"].is_file()]
    if not done:
        raise UserError("no metrics under results/metrics for the grid; run `python -m benchmark run` or dvc repro first")
    parts = [pd.read_csv(metrics_paths(p)["csv"]) for p in done]
    table = pd.concat(parts, ignore_index=True)
    table = table[[m in rows[p] for p, m in zip(table["protocol"], table["method"])]]  # methods since removed: out
    sig = [metrics_paths(p)["significance"] for p in done if metrics_paths(p)["significance"].stat().st_size > 1]
    significance = pd.concat([pd.read_csv(f) for f in sig], ignore_index=True) if sig else pd.DataFrame()
    protos = {p: config.load_protocol(p) for p in done}
    files = sorted({f for p in done for f in score_files(params, p, methods)})  # read before anything is written
    scores = read_scores(files, ["method", "train_set", "seed", "score"]) if files else None  # non-finite marks
    io.write_csv(out_dir / "metrics.csv", table)
    io.write_csv(out_dir / "significance.csv", significance)
    io.write_csv(out_dir / "metrics_seeds.csv", compare.seed_summary(table))
    io.write_json(out_dir / "metrics.json", series.headline(table, protos))
    io.write_json(out_dir / comparable.RECORD.name, comparable.record(params))  # which params made these metrics
    shown = sorted(table["method"].unique(), key=_order(params))
    prov = provenance.collect(params, shown, sorted(int(s) for s in table["seed"].unique()),
                              sorted(table["train_set"].unique()), scores)
    hist = histories(params, rows)
    analyses = [specs.analysis_dir(m) for m in shown if specs.analysis_dir(m).is_dir()]
    rocs = {k: v for p in done for k, v in series.read_rocs(metrics_paths(p)["curves"], p).items()}
    inputs = dict(params["report"]["inputs"])
    if out_dir != RESULTS:
        inputs.update(figure_dir=out_dir / "figures", significance_csv=out_dir / "significance.csv")
    written = series.model_series(hist, analyses, MODEL_CURVES) if out_dir == RESULTS else []
    paths = render_report(table, prov, protos, out_dir, histories=hist, analysis_dirs=analyses, rocs=rocs, **inputs)
    return [out_dir / n for n in ("metrics.csv", "metrics.json", "significance.csv", "metrics_seeds.csv",
                                  comparable.RECORD.name)] \
        + written + paths
