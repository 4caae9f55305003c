"""CLI parsing, params overrides and the one-line errors for bad input."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import benchmark  # noqa: F401
from benchmark import cli, config
from benchmark.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_merge_dotted_keys_with_yaml_values():
    params = config.load_params({"train.epochs": "2", "train.optimizer.lr": "1e-3", "grid.seeds": "[0, 1]"}, root=ROOT)
    assert params["train"]["epochs"] == 2
    assert params["train"]["optimizer"]["lr"] == 1e-3
    assert params["grid"]["seeds"] == [0, 1]
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["grid"]["seeds"] == [0]


@pytest.mark.parametrize("key, fragment", [
    ("train.epoch", "train has"),          # typo inside a section lists that section's keys
    ("trian.epochs", "params.yaml has"),   # typo at the top level lists the sections
    ("train.epochs.x", "not a mapping"),
])
def test_unknown_key_is_refused_with_the_valid_choices(key, fragment):
    with pytest.raises(UserError, match=fragment):
        config.load_params({key: "1"}, root=ROOT)


def test_profile_applies_its_overrides():
    params = config.load_params({"profile": "paper"}, root=ROOT)
    assert params["methods"]["dpl"]["backbone"] == "convnext_tiny"
    assert params["extract"]["size"] == 224
    with pytest.raises(UserError, match="unknown profile 'nope'; choose one of: .*paper"):
        config.load_params({"profile": "nope"}, root=ROOT)


def test_verb_arguments_are_separated_from_overrides():
    verb, args, overrides = cli.parse(["run", "protocol=cross_quality", "method=dpl", "train.epochs=2"])
    assert (verb, args, overrides) == ("run", {"protocol": "cross_quality", "method": "dpl", "jobs": None},
                                       {"train.epochs": "2"})
    _, args, _ = cli.parse(["train", "method=dpl", "seed=3"])
    assert args == {"method": "dpl", "train_set": "ff_c23", "seed": 3, "reuse": None}
    assert cli.parse(["jobs", "wave=2", "all=true"])[1] == {"protocol": None, "method": None, "wave": 2, "all": True}


@pytest.mark.parametrize("argv, message", [
    (["fly"], "unknown verb 'fly'; choose one of: synthesize, extract"),
    (["run", "jobs=two"], "jobs='two' is not allowed (not an integer)"),
    (["jobs", "all=maybe"], "all='maybe' is not allowed (not true or false)"),
    (["run", "protocol=nope"], "unknown protocol 'nope'; choose one of: "),
    (["train", "method=nope"], "unknown method 'nope'; choose one of: baseline, dpl"),
    (["train", "method=dpl", "seed=x"], "seed='x' is not allowed (not an integer)"),
    (["run", "protocol=cross_quality", "train.epoch=2"], "unknown key 'train.epoch'"),
    (["extract", "dataset=nope"], "unknown dataset 'nope'; choose one of: ff"),
    (["train", "method=dpl", "train_set=ff_c99"], "unknown train_set 'ff_c99'; choose one of: ff_raw, ff_c23, ff_c40"),
    (["run", "protocol"], "expected key=value, got 'protocol'"),
])
def test_bad_input_gives_one_line_and_exit_code_2(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_missing_dataset_root_names_the_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["extract", f"datasets.ff.root={tmp_path / 'absent'}"]) == 2
    assert f"dataset root {tmp_path / 'absent'} does not exist" in capsys.readouterr().err


def test_list_prints_every_registry():
    out = subprocess.run([sys.executable, "-m", "benchmark", "list"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for line in ("methods:", "protocols:", "datasets:", "indicator backends:", "perturbations:", "face detectors:"):
        assert line in out
    assert "dpl" in out and "baseline" in out and "cross_quality" in out and "synthff" in out
