"""check-regression / update-reference: a broken method fails the check, the real one passes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.evaluation import regression
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
    with pytest.raises(UserError, match="not valid JSON"):
        regression.check(csv, tmp_path / "bad.json", 0.02)
    (tmp_path / "ref.json").write_text(json.dumps(regression.make_reference(real_metrics, PARAMS)))
    with pytest.raises(UserError, match="regression.tolerance"):
        regression.check(csv, tmp_path / "ref.json", "x")


def test_cli_exit_codes(tmp_path):
    """update-reference rerun=false, then check-regression: 0 on the real metrics, 1 (with the
    table on stdout) after the method breaks."""
    for name in ("params.yaml",):
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "protocols").mkdir()
    (tmp_path / "results").mkdir()
    compute_metrics(scores()).to_csv(tmp_path / "results" / "metrics.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True)
    r = cli("update-reference", "rerun=false")
    assert r.returncode == 0, r.stderr
    ref = json.loads((tmp_path / "results" / "reference.json").read_text())
    assert ref["tolerance"] == yaml.safe_load((ROOT / "params.yaml").read_text())["regression"]["tolerance"]
    r = cli("check-regression")
    assert r.returncode == 0 and "RESULT: passed" in r.stdout, r.stdout + r.stderr
    compute_metrics(scores(broken="baseline")).to_csv(tmp_path / "results" / "metrics.csv", index=False)
    r = cli("check-regression")
    assert r.returncode == 1 and "DROPPED" in r.stdout and "FAIL baseline" in r.stdout
    r = cli("check-regression", "rerun=maybe")
    assert r.returncode == 2 and "rerun must be true or false" in r.stderr
