"""check-regression / update-reference: a broken method fails the check, the real one passes."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark import cli, config, io
from benchmark.evaluation import comparable, regression
from benchmark.errors import UserError
from benchmark.evaluation.metrics import compute_metrics

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"grid": {"methods": ["baseline", "dpl"], "protocols": ["cross_quality"], "seeds": [0]},
          "regression": {"tolerance": 0.02, "reference": "results/reference.json"}}


def scores(broken: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Frame scores of two methods on two test sets; ``broken`` scores at random."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in ("baseline", "dpl"):
        for test_set in ("c23", "c40"):
            for v in range(24):
                label = int(v >= 8)
                manip = "real" if not label else ["DF", "F2F", "FS", "NT"][v % 4]
                for f in range(3):
                    s = 0.3 + 0.4 * label + rng.normal(0, 0.25)
                    if method == broken:
                        s = rng.uniform()
                    rows.append(dict(protocol="cross_quality", method=method, seed=0,
                                     train_set="ff_c23", test_set=test_set, quality=test_set,
                                     perturbation="none", severity=np.nan, video_id=f"{test_set}{v}",
                                     label=label, manipulation=manip, score=s))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def real_metrics():
    return compute_metrics(scores())


def test_real_method_passes_and_broken_method_fails(real_metrics):
    ref = regression.make_reference(real_metrics, PARAMS)
    assert regression.compare(ref, real_metrics, 0.02).ok
    verdict = regression.compare(ref, compute_metrics(scores(broken="dpl")), 0.02)
    assert not verdict.ok
    assert set(verdict.table["method"]) == {"dpl"}  # baseline untouched: not listed
    assert (verdict.table["status"] == "DROPPED").any()
    assert len(verdict.failures) == 1 and verdict.failures[0].startswith("dpl on cross_quality: AUC dropped")
    text = verdict.text()
    assert "RESULT: FAILED" in text and "reference" in text and "current" in text


def test_drop_within_tolerance_passes_beyond_fails(real_metrics):
    ref = regression.make_reference(real_metrics, PARAMS)
    row = next(r for r in ref["rows"] if r["method"] == "baseline" and r["test_set"] == "c23"
               and r["subset"] == "all" and r["level"] == "frame")
    # reference 0.02 above current: a drop of exactly the tolerance passes ...
    row["auc"] = row["auc"] + 0.02
    assert regression.compare(ref, real_metrics, 0.02).ok
    # ... 0.0201 fails, and the explanation names the block and both values
    row["auc"] = row["auc"] + 0.0001
    v = regression.compare(ref, real_metrics, 0.02)
    assert not v.ok and len(v.table) == 1 and v.table.loc[0, "change"] == pytest.approx(-0.0201, abs=1e-6)
    assert "test_set=c23, perturbation=none, subset=all, level=frame" in v.failures[0]


def test_missing_rows_fail_and_say_why(real_metrics):
    ref = regression.make_reference(real_metrics, PARAMS)
    v = regression.compare(ref, real_metrics[real_metrics["method"] != "dpl"], 0.02)
    assert not v.ok and (v.table["status"] == "MISSING").sum() == len(ref["rows"]) // 2
    assert "method dpl has no cross_quality results" in v.failures[0]
    v = regression.compare(ref, real_metrics[real_metrics["test_set"] != "c40"], 0.02)
    assert "test sets c40 no longer measured" in v.failures[0]
    # a new row (e.g. a method merged since) is listed but passes
    new = regression.make_reference(real_metrics[real_metrics["method"] != "dpl"], PARAMS)
    v = regression.compare(new, real_metrics, 0.02)
    assert v.ok and set(v.table["status"]) == {"new"}


def test_reference_is_deterministic_and_rounded(real_metrics):
    a = regression.make_reference(real_metrics, PARAMS, "ci", "abc")
    b = regression.make_reference(real_metrics.sample(frac=1, random_state=1), PARAMS, "ci", "abc")
    assert json.dumps(a) == json.dumps(b)
    assert a["tolerance"] == 0.02 and a["profile"] == "ci" and a["grid"] == PARAMS["grid"]
    assert all(set(r) == set(regression.KEYS) | {"auc"} for r in a["rows"])


def test_bad_reference_and_tolerance_are_user_errors(tmp_path, real_metrics):
    csv = tmp_path / "m.csv"
    real_metrics.to_csv(csv, index=False)
    with pytest.raises(UserError, match="update-reference"):
        regression.check(csv, tmp_path / "nope.json", 0.02)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="bad.json is truncated or not JSON.*update-reference"):
        regression.check(csv, tmp_path / "bad.json", 0.02)
    (tmp_path / "ref.json").write_text(json.dumps(regression.make_reference(real_metrics, PARAMS)))
    with pytest.raises(UserError, match="regression.tolerance"):
        regression.check(csv, tmp_path / "ref.json", "x")


def _project(tmp_path, monkeypatch):
    """A project root in tmp_path (params, protocols, profiles), made the working directory."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for name in ("protocols", "profiles"):
        shutil.copytree(ROOT / name, tmp_path / name)
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _on_disk(metrics, overrides=None):
    """metrics.csv plus the record of the params that made it, as the report stage writes them."""
    metrics.to_csv("results/metrics.csv", index=False)
    io.write_json(comparable.RECORD, comparable.record(config.load_params(overrides)))


def _cli(capsys, *args):
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_exit_codes(tmp_path, monkeypatch, capsys):
    """update-reference rerun=false, then check-regression: 0 on the real metrics, 1 (with the
    table on stdout) after the method breaks."""
    _project(tmp_path, monkeypatch)
    _on_disk(compute_metrics(scores()))
    rc, _, err = _cli(capsys, "update-reference", "rerun=false")
    assert rc == 0, err
    ref = json.loads((tmp_path / "results" / "reference.json").read_text())
    assert ref["tolerance"] == yaml.safe_load((ROOT / "params.yaml").read_text())["regression"]["tolerance"]
    assert ref["format"] == 2 and ref["params_hash"] == comparable.record(config.load_params())["params_hash"]
    rc, out, err = _cli(capsys, "check-regression")
    assert rc == 0 and "RESULT: passed" in out, out + err
    _on_disk(compute_metrics(scores(broken="baseline")))
    rc, out, _ = _cli(capsys, "check-regression")
    assert rc == 1 and "DROPPED" in out and "FAIL baseline" in out
    rc, _, err = _cli(capsys, "check-regression", "rerun=maybe")
    assert rc == 2 and "rerun='maybe' is not allowed" in err and err.count("\n") == 1


def test_metrics_of_another_grid_are_refused_with_the_command_that_compares_them(tmp_path, monkeypatch, capsys):
    """After `make demo` (the default grid on disk) against the CI profile's reference: one line,
    exit 2, never a false FAILED -- the README's `check-regression` as written."""
    _project(tmp_path, monkeypatch)
    _on_disk(compute_metrics(scores()), {"profile": "ci"})
    assert _cli(capsys, "update-reference", "profile=ci", "rerun=false")[0] == 0
    assert json.loads(Path("results/reference.json").read_text())["profile"] == "ci"
    _on_disk(compute_metrics(scores(broken="dpl")))  # what make demo leaves: the default grid
    for args in (["check-regression"], ["check-regression", "profile=ci"]):
        rc, out, err = _cli(capsys, *args)
        assert rc == 2 and out == "" and err.count("\n") == 1, (out, err)
        assert "holds the metrics of the default params.yaml" in err and "made with profile ci" in err
        assert 'grid.protocols: ["cross_quality"] vs ["cross_quality", "cross_manipulation"' in err, err
        assert "python -m benchmark check-regression profile=ci rerun=true" in err


def test_a_rerun_with_other_params_is_refused_before_the_grid_runs(tmp_path, monkeypatch, capsys):
    _project(tmp_path, monkeypatch)
    _on_disk(compute_metrics(scores()), {"profile": "ci"})
    assert _cli(capsys, "update-reference", "profile=ci", "rerun=false")[0] == 0
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    rc, out, err = _cli(capsys, "check-regression", "rerun=true", "profile=ci", "train.epochs=3")
    assert rc == 2 and "train.epochs: 6 vs 3" in err and "check-regression profile=ci rerun=true" in err
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before  # nothing ran, nothing written
    rc, _, err = _cli(capsys, "update-reference", "rerun=false")  # metrics on disk are ci's, params default
    assert rc == 2 and "not of the current params" in err and "update-reference rerun=true" in err


def test_a_key_added_since_the_reference_keeps_it_comparable_only_at_its_default(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = config.load_params({"profile": "ci"})
    ref = comparable.grid_params(params)
    old = {k: v for k, v in ref.items() if k not in ("train.recipe", "methods.dpl.ppo_return")}  # keys made since
    assert comparable.differences(old, ref, params) == []
    own = comparable.grid_params(config.load_params({"profile": "ci", "train.recipe": "own"}))
    assert comparable.differences(old, own, params) == [("train.recipe", comparable.ABSENT, "own")]
    changed = comparable.differences(ref, comparable.grid_params(config.load_params()), params)
    assert ("train.epochs", 6, 10) in changed and ("methods.dpl.stage2_epochs", 2, 5) in changed
    # a reference made with another number of stages at once compares: grid.jobs changes no number
    jobs = comparable.grid_params(config.load_params({"profile": "ci", "grid.jobs": "1"}))
    assert jobs == ref and comparable.differences({**ref, "grid.jobs": 1}, jobs, params) == []


def test_a_reference_that_records_no_params_is_refused_with_the_command_that_regenerates_it(tmp_path):
    old = {"format": 1, "profile": "ci", "rows": []}
    (tmp_path / "ref.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"format-1 reference, which does not record the params.*"
                                        r"update-reference profile=ci"):
        regression.load_reference(tmp_path / "ref.json")
    (tmp_path / "ref.json").write_text(json.dumps({**old, "format": 2, "params": {}, "rows": [{"auc": 1}]}))
    with pytest.raises(UserError, match=r"rows\[0\] is not a row of protocol"):
        regression.load_reference(tmp_path / "ref.json")
