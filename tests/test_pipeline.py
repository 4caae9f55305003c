"""Pipeline wiring that the end-to-end test does not pin down on its own."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark import config, pipeline
from benchmark.errors import UserError
from benchmark.pipeline import dag, dvcfile, graph, reporting, specs

ROOT = Path(__file__).resolve().parents[1]


def _scores(method: str) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for test_set in ("c23", "c40"):
        for v, (label, manip) in enumerate([(0, "real"), (0, "real"), (1, "DF"), (1, "F2F"), (1, "FS"), (1, "NT")]):
            for sev in range(4):
                rows.append(dict(protocol="cross_quality", method=method, seed=0, train_set="ff_c23", test_set=test_set,
                                 quality=test_set, video_id=f"{manip}/{v}", frame_idx=0, label=label,
                                 manipulation=manip, perturbation="random_jpeg", severity=sev, jpeg_quality=100,
                                 score=float(rng.random()), vqi=0.5, fii=0.5, vqi_level=1, fii_level=1))
    return pd.DataFrame(rows)


def test_metrics_and_report_cover_the_grid_and_ignore_stale_scores(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "protocols", tmp_path / "protocols")
    shutil.copy(ROOT / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    for method in ("dpl", "retired"):
        path = pipeline.scores_path("cross_quality", method, "ff_c23", 0)
        path.parent.mkdir(parents=True)
        _scores(method).to_parquet(path)
    params = config.load_params({"grid.methods": "[dpl]"})
    pipeline.metrics(params, protocol="cross_quality")
    assert set(pd.read_csv("results/metrics/cross_quality.csv")["method"]) == {"dpl"}
    headline = json.loads(Path("results/metrics/cross_quality.json").read_text())
    assert set(headline) == {"dpl"} and set(headline["dpl"]) == {"c23", "c40"}  # what dvc exp show lists
    pipeline.report(params)
    assert set(pd.read_csv("results/metrics.csv")["method"]) == {"dpl"}
    assert '<section class="protocol" id="cross_quality">' in Path("results/report.html").read_text()
    reporting.protocol_metrics(params, "cross_quality", methods=["retired"])  # a method named on the command line
    assert set(pd.read_csv("results/metrics/cross_quality.csv")["method"]) == {"dpl", "retired"}


def test_headline_is_the_tables_average_per_test_set():
    """metrics.json: the mean over the protocol's listed subsets (not the pooled `all`), frame level,
    mean over seeds; several perturbations are keyed apart."""
    from benchmark.evaluation.metrics import METRIC_COLUMNS
    from benchmark.report.series import headline
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for subset, auc in zip(["DF", "F2F", "FS", "NT", "all"], [0.6, 0.7, 0.8, 0.9, 0.1]):
            for level in ("frame", "video"):
                rows.append({**dict.fromkeys(METRIC_COLUMNS), "protocol": "cq", "method": "m", "seed": seed,
                             "train_set": "ff_c23", "test_set": "c23", "subset": subset, "quality": "c23",
                             "perturbation": "random_jpeg", "level": level, "auc": auc + shift})
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    assert headline(table, {"cq": {"subsets": ["DF", "F2F", "FS", "NT"]}}) == {"cq": {"m": {"c23": 0.76}}}
    assert headline(table, {"cq": {"subsets": ["all"]}}) == {"cq": {"m": {"c23": 0.11}}}
    two = pd.concat([table, table.assign(perturbation="CS")])
    assert headline(two, {"cq": {"subsets": ["all"]}}) == {"cq": {"m": {"c23/CS": 0.11, "c23/random_jpeg": 0.11}}}


def test_stage_keys_chain_through_upstream_stages(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = config.load_params()
    args = {"method": "dpl", "train_set": "ff_c23", "seed": 0}
    base = pipeline.stage_key("train", params, **args)
    assert pipeline.stage_key("train", config.load_params({"methods.dpl.hidden": "8"}), **args) != base
    assert pipeline.stage_key("train", config.load_params({"evaluate.batch_size": "8"}), **args) == base  # not read by train
    assert pipeline.stage_key("train", config.load_params({"synthff.frames": "8"}), **args) != base  # upstream data
    assert pipeline.stage_key("train", params, **{**args, "seed": 1}) != base
    insts = dag.instances(params)
    up = dag.upstream(insts)["evaluate-cross_quality-dpl@0"]
    assert up == ["extract-ff", "indicators-ff", "train-dpl-ff_c23@0"]


def test_committed_dvc_yaml_is_the_render_of_the_declaration(monkeypatch):
    """dvc.yaml is generated from pipeline.graph: run `python -m benchmark dag` after a grid change."""
    monkeypatch.chdir(ROOT)
    assert (ROOT / "dvc.yaml").read_text() == dvcfile.render(config.load_params())
    dvcfile.check(config.load_params({"grid.seeds": "[0, 1, 2]", "methods.dpl.lreg_sign": "-1"}))  # values: same file
    with pytest.raises(UserError, match="run `python -m benchmark dag`"):
        dvcfile.check(config.load_params({"grid.methods": "[baseline]"}))


def test_the_default_grid_is_the_whole_paper(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = config.load_params()
    stages = graph.stages(params)
    evaluated = {s.meta["protocol"] for s in stages if s.verb == "evaluate"}
    assert set(config.protocol_names()) <= evaluated  # every protocol file is in the grid
    trained = {(s.meta["method"], s.meta["train_set"]) for s in stages if s.verb == "train"}
    assert {("qad", "ff_c23_DF"), ("ucf", "ff_c23_NT"), ("dpl", "ff_c23_FS")} <= trained  # Tab. 3
    assert not {ts for _, ts in trained} - {"ff_c23", "ff_c23_DF", "ff_c23_F2F", "ff_c23_FS", "ff_c23_NT"}
    assert {s.args["distortion"] for s in stages if s.verb == "distort"} >= {"CS", "CC", "BW", "GNC", "GB", "RESIZE", "VC"}
    reuse = {s.meta["method"]: s.args.get("reuse") for s in stages if s.verb == "train" and s.meta["train_set"] == "ff_c23"}
    assert reuse["dpl_wo_stage2"] == "dpl" and reuse["baseline_resnet"] == "baseline" and reuse["dpl"] is None
    # a variant that trains on its own does not wait for its base: no edge to the base's model
    own = next(s for s in stages if s.name == "train-dpl_paper-ff_c23")
    assert reuse["dpl_paper"] is None and not any(d.startswith("models/") for d in own.deps)
    assert [s.name for s in stages if s.verb == "analyze"] == ["analyze-dpl"]
    # the same model on the same test sets under the same conditions is scored once
    evaluated = {(s.meta["protocol"], s.meta["method"]) for s in stages if s.verb == "evaluate"}
    assert ("cross_quality", "dpl") in evaluated and ("ablation_fusion", "dpl") not in evaluated
    fusion = next(s for s in stages if s.name == "metrics-ablation_fusion")
    assert fusion.deps[:3] == ["results/scores/cross_quality/dpl", "results/scores/ablation_fusion/dpl_concat",
                               "results/scores/ablation_fusion/dpl_attention"]
    assert ("robustness", "dpl") in evaluated  # other test sets: its own scores


@pytest.mark.parametrize("method, base, expected", [
    ("baseline_resnet", "baseline", "final"),   # the same options: the base's model
    ("dpl_wo_stage2", "dpl", "I"),              # stage-II options only, no stage II: DPL's stage I
    ("dpl_paper", "dpl", None),                 # other stage-I options: trains
    ("dpl_r_ppo", "dpl", "I"),                  # stage-II options only, a stage II of its own: DPL's stage I, then II
    ("dpl_r_policy", "dpl", "I"),               # the same; its stage II starts from the select pick (last)
    ("dpl_concat", "baseline", None),           # another class
])
def test_reused_stage_decides_from_params_what_a_variant_takes_from_its_base(monkeypatch, method, base, expected):
    monkeypatch.chdir(ROOT)
    assert specs.reused_stage(config.load_params(), method, base) == expected


def test_a_method_depends_on_the_helpers_it_imports():
    deps = {m: set(graph.code_deps("train", [m])) for m in ("dpl", "baseline", "f3net")}
    assert {"methods/dpl.py", "methods/_ppo.py", "methods/_dpl_parts.py", "methods/_losses.py"} <= deps["dpl"]
    helpers = {d for d in deps["baseline"] if d.startswith("methods/_") and d != "methods/__init__.py"}
    assert helpers == {"methods/_losses.py"}  # its focal-loss option (baseline.loss), nothing of DPL's
    assert "methods/baseline.py" in deps["baseline"]
    assert "methods/_staged.py" in deps["f3net"] and "methods/_ppo.py" not in deps["f3net"]
    assert "benchmark/engine" in deps["baseline"] and not any("pipeline" in d for d in deps["baseline"])


def test_a_variant_in_the_grid_gets_its_roots_code(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = config.load_params({"grid.methods": "[baseline, dpl_concat]", "grid.protocols": "[cross_quality]"})
    stages = {s.name: s for s in graph.stages(params)}
    train = stages["train-dpl_concat-ff_c23"]
    assert "methods/dpl.py" in train.deps and train.params == ["train", "methods.dpl_concat", "methods.dpl", "numerics"]
    assert "reuse" not in train.args  # its base is not trained in this grid
    assert train.cmd == "python -m benchmark train method=dpl_concat train_set=ff_c23 seed=${item.seed}"


def test_every_stage_torch_computes_is_keyed_by_the_numerics(monkeypatch):
    """numerics: portable changes the bits a training or a score ends with, so it reruns those
    stages (and only those: data synthesis, extraction and the tables do not depend on it; the
    report reads every key, since it records the params that made the metrics)."""
    monkeypatch.chdir(ROOT)
    for s in graph.stages(config.load_params()):
        if s.verb != "report":
            assert ("numerics" in s.params) == (s.verb in ("indicators", "train", "evaluate", "analyze")), s.name


def test_waves_put_every_stage_after_what_it_reads(monkeypatch):
    monkeypatch.chdir(ROOT)
    insts = dag.instances(config.load_params())
    up, seen = dag.upstream(insts), set()
    for wave in dag.waves(insts):
        assert all(set(up[i.name]) <= seen for i in wave)
        seen |= {i.name for i in wave}
    assert len(seen) == len(insts)
    lines = pipeline.job_lines(config.load_params(), "cross_quality", "dpl", everything=True)
    assert lines[0].startswith("# wave 1 of ") and "python -m benchmark train method=dpl train_set=ff_c23 seed=0" in lines
    assert lines[-1].startswith("# when every wave has finished") and "report" not in lines[-1]
    assert pipeline.job_lines(config.load_params(), "cross_quality", "dpl", wave=1, everything=True) == [
        "python -m benchmark synthesize dataset=ff"]


def test_upstream_relates_a_dep_to_the_outputs_it_lies_in_or_holds():
    """By hand: a dep inside an output, a directory holding outputs, a sibling that only shares a
    prefix (``data/ab`` is not under ``data/a``), a stage's own outputs, a dep nobody makes."""
    def inst(name, deps, outs):
        return dag.Instance(name, graph.Stage(name, {}, [], [], []), None, deps, outs)
    insts = [inst("make_a", ["raw"], ["data/a"]), inst("make_ab", [], ["data/ab/"]),
             inst("make_b", [], ["data/b/x.pt", "data/b/y.pt"]),
             inst("inside", ["data/a/f.png"], []), inst("holds", ["data/b"], []), inst("all", ["data"], []),
             inst("sibling", ["data/ab/z"], []), inst("self", ["out/k"], ["out"])]
    assert dag.upstream(insts) == {
        "make_a": [], "make_ab": [], "make_b": [], "inside": ["make_a"], "holds": ["make_b"],
        "all": ["make_a", "make_ab", "make_b"], "sibling": ["make_ab"], "self": []}
    assert dag.producers(insts)("data/b/") == {"make_b"} and dag.producers(insts)("raw") == set()


@pytest.mark.parametrize("protocol, method, message", [
    ("cross_quality", "dpl_concat", "method 'dpl_concat' has no stages in protocol 'cross_quality'"),
    ("ablation_fusion", "baseline", "its methods are: dpl, dpl_attention, dpl_concat"),
])
def test_run_refuses_what_the_grid_does_not_hold(monkeypatch, protocol, method, message):
    from benchmark.pipeline import executor
    monkeypatch.chdir(ROOT)
    with pytest.raises(UserError, match=message):
        executor.select(dag.instances(config.load_params()), protocol, method)


def test_a_second_run_in_the_same_checkout_refuses(tmp_path, monkeypatch):
    from benchmark.pipeline import locks
    monkeypatch.chdir(tmp_path)
    with locks.run_lock():
        child = subprocess.run([sys.executable, "-c", "from benchmark.pipeline import locks\n"
                                "with locks.run_lock(): pass"], cwd=tmp_path, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode != 0 and "another `run` (pid " in child.stderr
    with locks.run_lock():  # released: the next one gets it
        pass


def test_one_stage_run_twice_at_once_serialises(tmp_path, monkeypatch):
    from benchmark.pipeline import locks
    monkeypatch.chdir(tmp_path)
    script = ("import sys, time\nfrom benchmark.pipeline import locks\n"
              "with locks.stage_lock('train-x'):\n"
              "    open('log', 'a').write('in\\n'); time.sleep(0.5); open('log', 'a').write('out\\n')\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
             for _ in range(2)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert (tmp_path / "log").read_text() == "in\nout\nin\nout\n"  # never interleaved


def test_provenance_says_synthetic_from_the_dataset_class_not_its_name(monkeypatch):
    from benchmark.pipeline import provenance
    monkeypatch.chdir(ROOT)
    assert provenance.collect(config.load_params(), ["dpl"], [0], ["ff_c23"])["dataset"]["synthetic"] is True
    real = config.load_params({"datasets.ff.name": "ffpp"})
    assert provenance.collect(real, ["dpl"], [0], ["ff_c23"])["dataset"]["synthetic"] is False
    assert "synthesize" not in {s.verb for s in graph.data_stages(real, {"ff"})}  # a downloaded tree is not generated
    assert [s.name for s in graph.data_stages(config.load_params(), {"ff"})] == ["synthesize-ff", "extract-ff",
                                                                                 "indicators-ff"]


def test_frames_subset_spreads_k_frames_per_video_and_none_keeps_all():
    rows = pd.DataFrame([dict(quality="c23", video_id=v, frame_idx=f) for v in ("a", "b") for f in (0, 3, 6, 9, 12)])
    got = pipeline.frames_subset(rows.sample(frac=1, random_state=0), 2)
    assert sorted(zip(got.video_id, got.frame_idx)) == [("a", 0), ("a", 12), ("b", 0), ("b", 12)]
    assert len(pipeline.frames_subset(rows, 3)) == 6 and len(pipeline.frames_subset(rows, None)) == 10


def test_distortion_protocol_expands_test_sets_and_chains_distort_stages(monkeypatch):
    monkeypatch.chdir(ROOT)
    proto = config.load_protocol("robustness")
    sets = pipeline.test_sets(proto)
    n = len(proto["distortions"]["codes"]) * len(proto["distortions"]["severities"])
    assert len(sets) == n * len(proto["test_sets"])
    assert any(t["faces"] == "ff@VC5" and t["perturbation"] == "VC" and t["severity"] == 5 for t in sets)
    up = dag.upstream(dag.instances(config.load_params()))["evaluate-robustness-baseline@0"]
    assert sum(u.startswith("distort-ff-") for u in up) == n
    assert pipeline.test_sets(config.load_protocol("cross_quality"))[0]["faces"] == "ff"


def test_cross_manipulation_train_sets_and_rows(monkeypatch):
    import pytest

    from benchmark.errors import UserError
    monkeypatch.chdir(ROOT)
    params = config.load_params()
    proto = config.load_protocol("cross_manipulation")
    assert pipeline.protocol_train_sets(proto) == ["ff_c23_DF", "ff_c23_F2F", "ff_c23_FS", "ff_c23_NT"]
    assert pipeline.protocol_train_sets(config.load_protocol("cross_quality")) == ["ff_c23"]   # the old form
    spec = pipeline.parse_train_set("ff_c23_F2F", params)
    assert spec == {"dataset": "ff", "quality": "c23", "split": "train", "manipulations": ["F2F"]}
    assert pipeline.train_set_id(spec) == "ff_c23_F2F" and pipeline.parse_train_set("ff_c40", params)["quality"] == "c40"
    for bad in ("ff", "zz_c23", "ff_c99", "ff_c23_"):
        with pytest.raises(UserError, match="unknown train_set"):
            pipeline.parse_train_set(bad, params)
    insts = {i.name: i for i in dag.instances(params)}
    up = dag.upstream(list(insts.values()))["evaluate-cross_manipulation-baseline@0"]
    assert [u for u in up if u.startswith("train-")] == [f"train-baseline-{t}@0" for t in sorted(pipeline.protocol_train_sets(proto))]
    assert insts["evaluate-cross_manipulation-baseline@0"].outs == \
        [f"results/scores/cross_manipulation/baseline/ff_c23_{m}_seed0.parquet" for m in ("DF", "F2F", "FS", "NT")]
    manifest = pd.DataFrame({"label": [0, 0, 1, 1, 1], "manipulation": ["real", "real", "DF", "F2F", "NT"]})
    assert pipeline.train_rows(spec, manifest)["manipulation"].tolist() == ["real", "real", "F2F"]
    assert len(pipeline.train_rows(pipeline.parse_train_set("ff_c23", params), manifest)) == 5
    with pytest.raises(UserError, match="no FS fakes"):
        pipeline.train_rows(pipeline.parse_train_set("ff_c23_FS", params), manifest)
    # the stand-in test sets: synthesised per dataset, binned with the training set's indicator edges
    ups = dag.upstream(list(insts.values()))
    assert ups["extract-cdf"] == ["synthesize-cdf"] and ups["indicators-cdf"] == ["extract-cdf", "indicators-ff"]


def test_cross_manipulation_table_has_a_train_row_per_manipulation():
    from benchmark.evaluation import metrics
    from benchmark.report.tables import build_tables
    rng = np.random.default_rng(1)
    rows = []
    for method in ("baseline", "dpl"):
        for train in ("DF", "F2F", "FS", "NT"):
            for test_set in ("c23", "c40"):
                for v, manip in enumerate(["real", "real", "DF", "F2F", "FS", "NT"] * 2):
                    for sev in range(4):
                        rows.append(dict(protocol="cross_manipulation", method=method, seed=0, train_set=f"ff_c23_{train}",
                                         test_set=test_set, quality=test_set, video_id=f"{manip}/{v}", frame_idx=0,
                                         label=int(manip != "real"), manipulation=manip, perturbation="random_jpeg",
                                         severity=sev, score=float(rng.random())))
    table = metrics.compute_metrics(pd.DataFrame(rows))
    tables = build_tables(table, "cross_manipulation", config.load_protocol("cross_manipulation", ROOT), {})
    frame = [t for t in tables if t.level == "frame"]
    assert [t.split for t in frame] == ["method = baseline", "method = dpl"]
    t = frame[0]
    assert [r for r, _ in t.rows] == ["DF", "F2F", "FS", "NT"] and t.groups == [("Test set c23", 5), ("Test set c40", 5)]
    assert t.columns == ["DF", "F2F", "FS", "NT", "Avg"] * 2
    head = metrics.headline_rows(table)
    want = head[(head.method == "baseline") & (head.train_set == "ff_c23_FS") & (head.test_set == "c40")
                & (head.subset == "NT") & (head.level == "frame")]["auc"].item()
    assert t.rows[2][1][5 + 3].text == f"{100 * want:.2f}"


def test_cross_dataset_table_has_one_column_per_test_dataset():
    from benchmark.evaluation import metrics
    from benchmark.report.tables import build_tables
    rng = np.random.default_rng(2)
    rows = []
    for test_set, fake in (("FSH", "FSH"), ("CDFv2", "CDF"), ("FFIW10K", "FFIW")):
        for v, manip in enumerate(["real", "real", fake, fake]):
            for sev in range(4):
                rows.append(dict(protocol="cross_dataset", method="baseline", seed=0, train_set="ff_c23",
                                 test_set=test_set, quality="c23", video_id=f"{manip}/{v}", frame_idx=0,
                                 label=int(manip != "real"), manipulation=manip, perturbation="random_jpeg",
                                 severity=sev, score=float(rng.random())))
    table = metrics.compute_metrics(pd.DataFrame(rows))
    tables = build_tables(table, "cross_dataset", config.load_protocol("cross_dataset", ROOT), {})
    assert [t.level for t in tables] == ["frame", "video"] and all(t.split == "" for t in tables)
    t = tables[0]
    assert t.columns == ["FSH", "CDFv2", "FFIW10K", "Avg"] and [r for r, _ in t.rows] == ["baseline"]
    head = metrics.headline_rows(table)
    aucs = [head[(head.test_set == n) & (head.subset == "all") & (head.level == "frame")]["auc"].item()
            for n in ("FSH", "CDFv2", "FFIW10K")]
    assert [c.text for c in t.rows[0][1]] == [f"{100 * a:.2f}" for a in aucs + [np.mean(aucs)]]  # Avg: of the AUCs


def test_run_executes_what_dvc_finds_stale_in_parallel_and_records_it(tmp_path, monkeypatch, capsys):
    """executor._execute on a 3-stage DVC project: a, then b and c at once; then nothing; then only
    what a changed input invalidates; a deleted output comes back from DVC's run cache."""
    from benchmark.pipeline import executor
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], check=True, env=env)
    (tmp_path / "mk.py").write_text("import sys, time\nname, *deps = sys.argv[1:]\ntime.sleep(0.5)\n"
                                    "text = ''.join(open(d).read() for d in deps) + name\n"
                                    "open(name + '.txt', 'w').write(text)\n")
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "params.yaml").write_text("b: 1\nc: 1\n")  # b and c each read their own key
    spec = {"a": ["in.txt"], "b": ["a.txt"], "c": ["a.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        n: {"cmd": f"python mk.py {n} {' '.join(d)}", "deps": ["mk.py", *d], "outs": [f"{n}.txt"],
            **({"params": [n]} if n != "a" else {})}
        for n, d in spec.items()}}))

    class Job(dag.Instance):
        @property
        def argv(self):
            return ["python", "mk.py", self.name, *self.deps[1:]]
    todo = [Job(n, graph.Stage("x", {}, [], [], []), None, ["mk.py", *d], [f"{n}.txt"]) for n, d in spec.items()]

    checks = []  # the CLI's check of what the stages read: once a stage is to run, before it starts

    def run():
        from dvc.repo import Repo
        with Repo() as repo:
            state = executor._State.read(repo, todo, check=lambda: checks.append(sorted(Path(".").glob("*.txt"))))
            return executor._execute(state, todo, jobs=2, threads=1)
    first = run()
    assert first[0] == "a" and sorted(first[1:]) == ["b", "c"]  # a first (b and c read it), b and c at once
    assert checks == [[Path("in.txt")]]  # once, before a started
    starts = {ln.split()[0]: float(ln.split()[1]) for ln in (tmp_path / ".benchmark/logs/times.tsv").read_text().splitlines()}
    assert (tmp_path / "b.txt").read_text() == "xab" and set(starts) == {"a", "b", "c"}
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True, env=env)
    assert status.stdout.strip() == "{}"  # recorded as dvc repro would
    assert run() == [] and "[skip] b: up to date" in capsys.readouterr().out
    assert len(checks) == 1  # nothing to run: nothing checked
    (tmp_path / "in.txt").write_text("y")
    again = run()
    assert again[0] == "a" and sorted(again[1:]) == ["b", "c"] and (tmp_path / "c.txt").read_text() == "yac"
    (tmp_path / "b.txt").unlink()
    assert run() == [] and "[done] b: restored from DVC's run cache" in capsys.readouterr().out
    assert (tmp_path / "b.txt").read_text() == "yab"
    (tmp_path / "params.yaml").write_text("b: 1\nc: 2\n")  # params.yaml is parsed once for all stages
    assert run() == ["c"] and "[skip] b: up to date" in capsys.readouterr().out
    (tmp_path / "mk.py").write_text((tmp_path / "mk.py").read_text() + "# edited\n")  # hashed once, read by all
    assert sorted(run()) == ["a", "b", "c"]


def test_publish_keeps_an_earlier_stages_last_and_best_validation_checkpoints(tmp_path):
    """A variant that reuses stage I (``stages._reuse``) finds its last checkpoint, and under
    ``train.select: best_val`` its best-validation one."""
    from benchmark.pipeline import stages
    work, out = tmp_path / "work", tmp_path / "out"
    for name in ("I/epoch_1.pth", "I/epoch_2.pth", "I/best_auc_epoch_1.pth", "II/epoch_1.pth",
                 "II/best_auc_epoch_1.pth", "model.pt", "history.csv"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(name.encode())
    (work / "train.json").write_text(json.dumps({"recipe": {"I": {}, "II": {}}}))
    stages._publish(work, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "I/best_auc_epoch_1.pth", "I/epoch_2.pth", "history.csv", "model.pt", "train.json"]
    assert (out / "I/epoch_2.pth").read_bytes() == b"I/epoch_2.pth" and not work.exists()


def test_a_started_stage_is_reaped_by_the_executor_not_by_a_later_subprocess(tmp_path, monkeypatch):
    """``run`` waits for its stages with os.wait4; a stage's child that exits while other code
    starts a subprocess (DVC's git calls do) must still be there for it. (It was not: the dropped
    Popen object put the child on subprocess's orphan list, the next Popen reaped it, and
    `run jobs=2` died with ChildProcessError.)"""
    import gc
    import time
    from types import SimpleNamespace

    from benchmark.pipeline import executor
    monkeypatch.setattr(executor, "LOGS", tmp_path)
    running = executor._start(SimpleNamespace(name="s", argv=["python", "-c", "pass"]), threads=1)
    pid = next(iter(running))
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z":  # exited, not reaped
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.05)
    gc.collect()
    subprocess.run([sys.executable, "-c", "pass"], check=True)  # what reaps subprocess's orphans
    got, status, _ = os.wait4(pid, 0)
    assert got == pid and os.waitstatus_to_exitcode(status) == 0
    running[pid][1].close()


def test_logged_times_sums_user_and_sys_and_keeps_a_stages_last_line(tmp_path):
    from benchmark.pipeline import executor
    assert executor.logged_times(tmp_path) == {}
    (tmp_path / executor.TIMES).parent.mkdir(parents=True)
    (tmp_path / executor.TIMES).write_text("a\t10.0\t7.5\t1.5\nb\t2.0\t1.0\t0.25\na\t4.0\t3.0\t0.5\n")
    assert executor.logged_times(tmp_path) == {"a": (4.0, 3.5), "b": (2.0, 1.25)}
