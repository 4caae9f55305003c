"""Bad input never reaches a traceback: every verb, every params section and key (from the
schema, so a key is covered the moment it is declared), every method's options, verb arguments
and protocol files -- one line on stderr, exit code 2, and nothing under data/, models/ or
results/ changed. Plus: the schema declares exactly the keys of params.yaml, with their defaults."""
import shutil
from pathlib import Path

import pytest
import yaml

import benchmark  # noqa: F401  (torchvision shim)
from benchmark import cli, registry, schema
from benchmark.schema import methods as method_schema
from benchmark.schema.keys import _show

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
REQUIRED = {"distort": ["distortion=CS", "severity=1"], "train": ["method=baseline"],
            "evaluate": ["method=baseline", "protocol=cross_quality"], "run": ["protocol=cross_quality"],
            "analyze": ["method=dpl"], "metrics": ["protocol=cross_quality"]}
SENTINELS = ["data/faces/ff/manifest.parquet", "models/ff_c23/dpl/seed0/model.pt", "results/metrics.csv"]


def _key_cases():
    """(dotted key, bad value as typed, what is wrong) for every declared key params.yaml holds."""
    out = [(name, raw, what) for name, key in schema.TOP.items() for what, raw in key.bad_values()]
    for section, keys in schema.SECTIONS.items():
        for name, key in keys.items():
            out += [(f"{section}.{name}", raw, what) for what, raw in key.bad_values()]
    for name, key in schema.DATASET_ENTRY.items():
        entry = next((d for d, e in PARAMS["datasets"].items() if name in e), None)
        if entry is not None:  # a key no entry of params.yaml has cannot be overridden (unknown key)
            out += [(f"datasets.{entry}.{name}", raw, what) for what, raw in key.bad_values()]
    return out


def _first_bad(section):
    name, key = next(iter(schema.SECTIONS[section].items()))
    return f"{section}.{name}", key.bad_values()[0][1]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "params.yaml", proj)
    for name in ("protocols", "profiles"):
        shutil.copytree(ROOT / name, proj / name)
    for rel in SENTINELS:  # stand-ins for outputs a bad command must leave alone
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_bytes(b"made by an earlier run")
    (proj / "protocols" / "bad_values.yaml").write_text(yaml.safe_dump({
        "train_set": {"dataset": "ff", "quality": "c23", "split": "train"}, "conditions": "random_jpeg",
        "test_sets": [{"name": "c23", "dataset": "ff", "quality": "c99", "split": "test"}]}))
    return proj


def _state(proj: Path) -> dict:
    return {str(p.relative_to(proj)): (p.stat().st_size, p.stat().st_mtime_ns) for p in proj.rglob("*")
            if p.parts[len(proj.parts)] in ("data", "models", "results", ".benchmark")}


def _refused(proj, monkeypatch, capsys, argv) -> str:
    monkeypatch.chdir(proj)
    before = _state(proj)
    rc = cli.main(argv)
    out = capsys.readouterr()
    assert rc == 2, (argv, out.out[-500:], out.err[-500:])
    assert out.err.startswith("error: ") and out.err.count("\n") == 1, (argv, out.err)
    assert _state(proj) == before, argv  # nothing written, moved or removed
    return out.err


@pytest.mark.parametrize("key, raw, what", _key_cases(), ids=lambda v: str(v))
def test_every_key_refuses_a_bad_value(project, monkeypatch, capsys, key, raw, what):
    err = _refused(project, monkeypatch, capsys, ["train", "method=baseline", f"{key}={raw}"])
    value = _show(yaml.safe_load(raw))
    assert key in err or f"{key}=" in err.replace("'", ""), err
    assert value in err and "expected" in err, err  # the value, and what is allowed


@pytest.mark.parametrize("verb", list(cli.VERBS))
@pytest.mark.parametrize("section", list(schema.SECTIONS))
def test_every_verb_refuses_a_bad_value_in_every_section(project, monkeypatch, capsys, verb, section):
    key, raw = _first_bad(section)
    err = _refused(project, monkeypatch, capsys, [verb, *REQUIRED.get(verb, []), f"{key}={raw}"])
    assert key in err


def _option_cases():
    out = []
    for name in registry.choices(registry.METHODS):
        cls, hints = registry.get(registry.METHODS, name), method_schema.annotations(registry.get(registry.METHODS, name))
        typed = [o for o in PARAMS["methods"].get(name, {}) if hints.get(o) in (int, float, bool, str)]
        if typed:
            out.append((name, typed[0], "[1, 2]", "expected"))  # a list fits none of those
        out.append((name, "backbone", "nope_not_a_model", "not a timm model"))
    return out


@pytest.mark.parametrize("method, option, raw, fragment", _option_cases())
def test_every_method_refuses_bad_options_before_any_stage(project, monkeypatch, capsys, method, option, raw,
                                                           fragment):
    err = _refused(project, monkeypatch, capsys, ["run", "protocol=cross_quality", f"methods.{method}.{option}={raw}"])
    assert f"methods.{method}" in err and fragment in err


@pytest.mark.parametrize("argv, fragment", [
    (["run", "protocol=cross_quality", "methods.dpl.fusion=max"], "methods.dpl.fusion='max'"),
    (["run", "protocol=ablation_fusion", "methods.dpl_concat.fusion=max"], "fusion='max'"),  # a variant's option
    (["train", "method=dpl", "methods.dpl.stage1_checkpoint=best"], "stage1_checkpoint"),
    (["train", "method=baseline", "train.param_scheduler=[{type: LinearLR, start_factor: -3}]"],
     "parameter scheduler refused"),
    (["train", "method=baseline", "train.optimizer={type: Adam, lr: 0.1, nope: 1}"], "optimiser"),
    (["train", "method=dpl", "seed=-1"], "seed=-1 is not allowed"),
    (["distort", "distortion=XX", "severity=1"], "distortion='XX' is not allowed"),
    (["distort", "distortion=CS", "severity=9"], "severity=9 is not allowed"),
    (["check-regression", "rerun=maybe"], "rerun='maybe' is not allowed"),
    (["list", "what=everything"], "what='everything' is not allowed"),
    (["run", "protocol=bad_values"], "test_sets"),
    (["run", "protocol=cross_quality", "grid.methods=[baseline, nope]"], "grid.methods element='nope'"),
    (["report", "metrics.reference_method=nope"], "metrics.reference_method='nope'"),
    (["train", "method=dpl", "train_set=ff_c99"], "unknown train_set"),
    (["train", "method=dpl", "datasets.fsh.indicator_edges=nope"], "indicator_edges='nope'"),
    # a crop side the model cannot take (Method.check_input_size): refused up front, not mid-grid
    (["run", "protocol=cross_quality", "extract.size=32"], "methods.srm: srm was built for 64-px input"),
    (["train", "method=srm", "extract.size=32"], "set methods.srm.input_size: 32"),
    (["train", "method=baseline_swin_t", "extract.size=32"], "set its backbone_kwargs img_size: 32"),
])
def test_arguments_options_and_protocol_files(project, monkeypatch, capsys, argv, fragment):
    assert fragment in _refused(project, monkeypatch, capsys, argv)


def test_run_builds_the_methods_of_an_edited_params_yaml_before_refusing(project, tmp_path, monkeypatch, capsys):
    """``run`` without overrides builds the methods only once a stage is to run (a no-op rerun
    builds none); a value in params.yaml that a method refuses is still the one line, named before
    the stale dvc.yaml, and nothing is touched."""
    proj = tmp_path / "edited"
    shutil.copytree(project, proj)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["extract"]["size"] = 32
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "methods.srm: srm was built for 64-px input" in _refused(proj, monkeypatch, capsys, ["run"])


def test_the_issue_s_commands_are_refused_up_front(project, monkeypatch, capsys):
    """The five rows of issue 12: each one line, before anything runs or is deleted."""
    for argv in (["run", "protocol=cross_quality", "train.epochs=abc"],
                 ["run", "protocol=cross_quality", "train.batch_size=0"],
                 ["run", "protocol=cross_quality", "train.epochs=-1"],
                 ["run", "protocol=cross_quality", "methods.dpl.fusion=max"],
                 ["train", "method=dpl", "train_set=ff_c23", "seed=0", "train.epochs=abc"]):
        _refused(project, monkeypatch, capsys, argv)
    assert (project / "models/ff_c23/dpl/seed0/model.pt").read_bytes() == b"made by an earlier run"


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict) and v and f"{prefix}{k}" not in DECLARED:  # a nested mapping, not a Dict key
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


DECLARED = {f"{s}.{k}": key for s, keys in schema.SECTIONS.items() for k, key in keys.items()}


def test_schema_declares_every_params_key_and_nothing_else():
    sections = {k: v for k, v in PARAMS.items() if k in schema.SECTIONS}
    assert set(PARAMS) == set(schema.TOP) | set(schema.SECTIONS) | {"datasets", "methods"}
    for name, key in schema.TOP.items():
        assert key.default == PARAMS[name], name
    found = dict(_leaves(sections))
    assert sorted(set(found) - set(DECLARED)) == [], "params.yaml keys not declared in benchmark/schema/sections.py"
    assert sorted(set(DECLARED) - set(found)) == [], "declared keys missing from params.yaml"
    for key, value in found.items():
        assert DECLARED[key].default == value, f"{key}: declared default {DECLARED[key].default!r}, params.yaml {value!r}"
    for name, entry in PARAMS["datasets"].items():
        assert set(entry) <= set(schema.DATASET_ENTRY), name
    for name in PARAMS["methods"]:
        root, opts = __import__("benchmark.pipeline", fromlist=["x"]).resolve_method(PARAMS, name)
        cls = registry.get(registry.METHODS, root)
        assert set(opts) <= set(method_schema.signature(cls)), name  # every option is a constructor argument
    schema.validate(PARAMS)  # and the shipped values are all allowed


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_every_profile_is_valid(profile, monkeypatch):
    """Its values, and every methods entry built with them takes its crop side (the preflight's checks)."""
    from benchmark import config, pipeline
    monkeypatch.chdir(ROOT)
    params = config.load_params({"profile": profile})
    schema.validate(params)
    for name in params["methods"]:
        root, opts = pipeline.resolve_method(params, name)
        method = method_schema.dry_build(name, registry.get(registry.METHODS, root), opts)
        method_schema.check_input_size(name, method, params["extract"]["size"])


def test_list_params_documents_every_key(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["list", "params"]) == 0
    out = capsys.readouterr().out
    for key, decl in DECLARED.items():
        assert f"{key} = {_show(decl.default)}\n    {decl.allowed()}; {decl.doc}" in out, key
    assert "methods.<dpl entry>.fusion = 'add'" in out and "datasets.<id>.root" in out
