"""Faults lose nothing. Every stage is killed (SIGKILL, its whole process group) at a seeded
random point of its work and run again: the rerun finishes, its outputs are byte-identical to an
uninterrupted run's (timings and the count of resumed videos aside), and no half-written file is
ever visible under data/, models/ or results/ -- checked while the stage runs, after the kill and
after the rerun. A full disk during extraction or a checkpoint write is one line, and the rerun
resumes.

Tiny SynthFF data; every run is a child process with PYTHONHASHSEED=0 and one thread, so runs
are comparable bit for bit (``Server``: one process imports everything once and forks each run,
in its own session, so a kill takes the stage's whole process group, as for `python -m
benchmark <verb>`).
"""
import json
import os
import re
import shutil
import tarfile
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synthff.pairs": {"train": 2, "val": 1, "test": 1}, "synthff.frames": 4, "synthff.size": 64,
    "extract.frames_per_video": 2, "extract.size": 32, "train.epochs": 2, "train.batch_size": 8,
    "methods.dpl.hidden": 16, "methods.dpl.stage2_epochs": 1, "grid.methods": ["dpl"],
    "metrics.bootstrap": 20,
}
# (stage, argv, glob whose appearance starts the kill clock, or None: from the stage's start)
STAGES = [
    ("synthesize", ["synthesize"], "data/raw/.synthff.*/synthff/**/*.mp4"),
    ("extract", ["extract", "dataset=ff"], "data/faces/.ff.work/parts/**/*.json"),
    ("indicators", ["indicators", "dataset=ff"], None),
    ("distort", ["distort", "distortion=GNC", "severity=3"], None),
    ("train", ["train", "method=dpl"], ".benchmark/work/.models__ff_c23__dpl__seed0.partial-*/I/epoch_1.pth"),
    ("evaluate", ["evaluate", "method=dpl", "protocol=cross_quality"], None),
    ("metrics", ["metrics", "protocol=cross_quality"], None),
    ("report", ["report"], None),
]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
SERVER = """
import json, os, sys, time
import benchmark, torch, timm, mmengine.runner
from benchmark import cli, registry
registry.load_all()
torch.set_num_threads(1)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    req = json.loads(line)
    log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    start, pid = time.perf_counter(), os.fork()
    if pid == 0:
        os.setsid()
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(req["cwd"])
        try:
            rc = cli.main(req["argv"])
        except BaseException:
            import traceback
            traceback.print_exc()
            rc = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    os.close(log)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "wall": time.perf_counter() - start}), flush=True)
"""
LOG_DIR = re.compile(r"^\d{8}_\d{6}$")  # mmengine's per-run log folders and config dumps (timestamped)
RUN_HISTORY = ("seconds", "videos_resumed")  # how long a run took, how much of it was resumed


class Server:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], env=ENV, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def start(self, argv: list, cwd: Path) -> int:
        req = {"argv": argv, "cwd": str(cwd), "log": str(self.log_dir / f"{cwd.name}.log")}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def result(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def run(self, argv: list, cwd: Path) -> dict:
        self.start(argv, cwd)
        return self.result()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _project(path: Path) -> Path:
    path.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in TINY.items():
        node = params
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        assert last in node, dotted
        node[last] = value
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("protocols", "profiles", "results/paper"):
        shutil.copytree(ROOT / name, path / name)
    return path


def _visible(proj: Path):
    """Files under data/, models/, results/ a reader would open: no component hidden (temporary)."""
    # os.walk, not rglob: a stage's hidden work directory may vanish mid-scan (it is renamed or
    # removed when the stage finishes); walk skips what vanished and never descends into it.
    for top in ("data", "models", "results"):
        for root, dirs, files in os.walk(proj / top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                if not f.startswith("."):
                    yield Path(root) / f


def _complete(path: Path) -> None:
    """Raise if ``path`` is not a whole file of its kind."""
    suffix = path.suffix
    if suffix == ".parquet":
        pd.read_parquet(path)
    elif suffix == ".csv":
        pd.read_csv(path, comment="#")
    elif suffix == ".json" and path.parent.name != "vis_data":
        json.loads(path.read_text())
    elif suffix in (".pt", ".pth"):
        torch.load(path, weights_only=True, map_location="cpu")
    elif suffix == ".png":
        assert cv2.imread(str(path)) is not None, path
    elif suffix == ".tar":  # a crop-store shard: every member readable to its end
        with tarfile.open(path) as tar:
            assert all(tar.extractfile(m).read() for m in tar.getmembers()), path
    elif suffix == ".mp4":
        cap = cv2.VideoCapture(str(path))
        assert cap.isOpened() and cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0, path
        cap.release()


def _check_all(proj: Path, seen: dict) -> None:
    for p in _visible(proj):
        try:
            st = p.stat()
            if seen.get(p) != (st.st_size, st.st_mtime_ns):
                _complete(p)
                seen[p] = (st.st_size, st.st_mtime_ns)
        except (FileNotFoundError, AssertionError):  # cv2.imread of a vanished file returns None
            if p.exists():
                raise
            # removed between the walk and now (DVC clears a stage's outputs before running it)


def _fingerprint(proj: Path) -> dict:
    """{relative path: normalised content} of the visible outputs (timings and logs left out)."""
    out = {}
    for p in _visible(proj):
        rel = p.relative_to(proj)
        if any(LOG_DIR.match(part.split(".")[0]) for part in rel.parts) or p.name == "last_checkpoint":
            continue
        if p.suffix == ".json":
            out[str(rel)] = _untimed(json.loads(p.read_text()))
        elif p.name == "history.csv":
            out[str(rel)] = pd.read_csv(p).drop(columns=["seconds"]).to_json()
        elif p.suffix == ".pth":  # mmengine's meta holds the run's time and name: compare the tensors
            state = torch.load(p, weights_only=True, map_location="cpu")["state_dict"]
            out[str(rel)] = {k: v.numpy().tobytes() for k, v in state.items()}
        else:
            out[str(rel)] = p.read_bytes()
    return out


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in RUN_HISTORY}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _written(before: dict, after: dict) -> dict:
    return {k: v for k, v in after.items() if k not in before or _differ(before[k], v)}


def _differ(a, b) -> bool:
    return a != b if not isinstance(a, dict) else (a.keys() != b.keys() or any(_differ(a[k], b[k]) for k in a))


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_during(server: Server, proj: Path, argv: list, trigger: str | None, wall: float, rng) -> dict:
    """Run the stage, SIGKILL its process group at a random point, checking visible files meanwhile."""
    seen = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in _visible(proj)}
    pid = server.start(argv, proj)
    deadline = time.monotonic() + 300
    if trigger:
        while not list(proj.glob(trigger)) and _alive(pid) and time.monotonic() < deadline:
            _check_all(proj, seen)
            time.sleep(0.02)
        kill_at = time.monotonic() + rng.uniform(0.0, 0.3)
    else:
        kill_at = time.monotonic() + rng.uniform(0.05, 0.9) * wall
    while time.monotonic() < kill_at and _alive(pid):
        _check_all(proj, seen)
        time.sleep(0.02)
    killed = _alive(pid)
    if killed:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:  # it finished in between
            killed = False
    result = server.result()
    _check_all(proj, seen)  # nothing half-written is visible after the kill either
    return {"killed": killed, "rc": result["rc"]}


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    ref, snaps = _project(base / "reference"), base / "snapshots"
    (base / "logs").mkdir()
    server = Server(base / "logs")
    try:
        chain = {}
        for name, argv, _ in STAGES:  # the uninterrupted runs, snapshotting the project before each
            shutil.copytree(ref, snaps / name, symlinks=True)
            chain[name] = server.run(argv, ref)
            assert chain[name]["rc"] == 0, (name, (base / "logs" / "reference.log").read_text()[-3000:])
        order = [n for n, _, _ in STAGES]
        after = {n: _fingerprint(snaps / order[i + 1]) if i + 1 < len(order) else _fingerprint(ref)
                 for i, n in enumerate(order)}
        expected = {n: _written(_fingerprint(snaps / n), after[n]) for n in order}
        rng, runs, rerun_rc = np.random.default_rng(12), {}, {}
        for name, argv, trigger in STAGES:
            work = shutil.copytree(snaps / name, base / f"killed_{name}", symlinks=True)
            runs[name] = _kill_during(server, work, argv, trigger, chain[name]["wall"], rng)
            rerun_rc[name] = server.run(argv, work)["rc"]
    finally:
        server.close()
    return {"base": base, "snaps": snaps, "expected": expected, "runs": runs, "rerun_rc": rerun_rc}


@pytest.mark.parametrize("stage", [n for n, _, _ in STAGES])
def test_a_killed_stage_reruns_to_the_same_outputs(faults, stage):
    work = faults["base"] / f"killed_{stage}"
    assert faults["rerun_rc"][stage] == 0, (faults["base"] / "logs" / f"{work.name}.log").read_text()[-3000:]
    got = _written(_fingerprint(faults["snaps"] / stage), _fingerprint(work))
    want = faults["expected"][stage]
    assert want, f"the uninterrupted {stage} wrote nothing?"
    assert sorted(got) == sorted(want)
    for rel in want:
        assert not _differ(got[rel], want[rel]), f"{stage}: {rel} differs from the uninterrupted run"
    _check_all(work, {})


def test_the_kills_interrupted_the_stages(faults):
    """Most kills must land while the stage works (else the test above proves little)."""
    killed = [n for n, r in faults["runs"].items() if r["killed"]]
    assert len(killed) >= len(STAGES) - 2, faults["runs"]
    assert all(faults["runs"][n]["rc"] == -signal.SIGKILL for n in killed)
    assert faults["runs"]["train"]["killed"]  # after epoch 1's checkpoint, in epoch 2 or stage II


# ---------------------------------------------------------------- a full disk
def _enospc(path):
    return OSError(28, "No space left on device", str(path))


@pytest.fixture()
def extracted(faults, tmp_path):
    """Copies of the tiny project just before extraction and just before training."""
    return {s: shutil.copytree(faults["snaps"] / s, tmp_path / s, symlinks=True) for s in ("extract", "train")}


def _one_error_line(err: str) -> str:
    """The error message, checked to be one line with no traceback before it."""
    assert "Traceback" not in err and err.count("error: ") == 1, err
    line = err[err.index("error: "):]
    assert line.count("\n") == 1 and line.endswith("\n"), err
    return line


def _main(argv, cwd, monkeypatch, capsys):
    from benchmark import cli
    monkeypatch.chdir(cwd)
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


def test_a_full_disk_during_extraction_is_one_line_and_the_rerun_resumes(extracted, tmp_path, monkeypatch, capsys):
    from benchmark.data import extract as ex
    clean = shutil.copytree(extracted["extract"], tmp_path / "clean", symlinks=True)
    assert _main(["extract", "dataset=ff"], clean, monkeypatch, capsys)[0] == 0
    real, calls = ex._save_crops, []

    def full_after_six(work, video, *args):
        calls.append(video["video_id"])
        if len(calls) > 6:
            raise _enospc(work / "crops")
        return real(work, video, *args)
    monkeypatch.setattr(ex, "_save_crops", full_after_six)
    proj = extracted["extract"]
    rc, err = _main(["extract", "dataset=ff"], proj, monkeypatch, capsys)
    err = _one_error_line(err)  # (after the progress bar the stage drew before the disk filled)
    assert rc == 2 and "no space left on the device writing" in err and "resumes" in err
    assert not (proj / "data/faces/ff").exists()  # nothing visible; the finished videos wait in .ff.work
    monkeypatch.setattr(ex, "_save_crops", real)
    assert _main(["extract", "dataset=ff"], proj, monkeypatch, capsys)[0] == 0
    report = json.loads((proj / "data/faces/ff/extract_report.json").read_text())
    assert report["videos_resumed"] >= 2
    assert _fingerprint(proj) == _fingerprint(clean) | {
        "data/faces/ff/extract_report.json": _fingerprint(proj)["data/faces/ff/extract_report.json"]}
    assert (proj / "data/faces/ff/manifest.parquet").read_bytes() == (clean / "data/faces/ff/manifest.parquet").read_bytes()


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_the_rerun_resumes(extracted, tmp_path, monkeypatch,
                                                                              capsys):
    from benchmark.engine import checkpoint
    from benchmark.engine.model import MethodModel
    argv = ["train", "method=baseline"]
    steps, step = [], MethodModel.train_step
    monkeypatch.setattr(MethodModel, "train_step", lambda self, *a, **k: steps.append(1) or step(self, *a, **k))
    clean = shutil.copytree(extracted["train"], tmp_path / "clean", symlinks=True)
    assert _main(argv, clean, monkeypatch, capsys)[0] == 0
    full = len(steps)
    real, calls = checkpoint.AtomicLocalBackend.put, []

    def full_at_epoch_2(self, obj, filepath):  # (epoch 1's validation writes other files before it)
        calls.append(Path(filepath).name)
        if calls[-1] == "epoch_2.pth" and calls.count("epoch_2.pth") == 1:
            raise _enospc(filepath)
        return real(self, obj, filepath)
    monkeypatch.setattr(checkpoint.AtomicLocalBackend, "put", full_at_epoch_2)
    proj = extracted["train"]
    rc, err = _main(argv, proj, monkeypatch, capsys)
    err = _one_error_line(err)
    assert rc == 2 and "no space left on the device writing" in err and "epoch_2.pth" in err
    assert not (proj / "models/ff_c23/baseline").joinpath("seed0").exists()
    partial = next((proj / ".benchmark/work").glob(".models__ff_c23__baseline__seed0.partial-*"))
    assert [p.name for p in partial.glob("epoch_*.pth")] == ["epoch_1.pth"]  # intact; no half of epoch 2
    # the disk filled at the epoch-2 checkpoint: before it epoch 1's, its best-validation copy and
    # epoch 1's again (mmengine rewrites it after a new best, to record the best in its hub)
    assert calls[:calls.index("epoch_2.pth")] == ["epoch_1.pth", "best_auc_epoch_1.pth", "epoch_1.pth"], calls
    monkeypatch.setattr(checkpoint.AtomicLocalBackend, "put", real)
    steps.clear()
    assert _main(argv, proj, monkeypatch, capsys)[0] == 0
    assert 2 * len(steps) == full  # resumed after epoch 1 of 2: only epoch 2 trained again
    model = "models/ff_c23/baseline/seed0/model.pt"
    assert (proj / model).read_bytes() == (clean / model).read_bytes()


# ---------------------------------------------------------------- corrupt artefacts
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


def _foreign_model(path: Path) -> None:  # a model.pt of another configuration (another method)
    from methods.baseline import Baseline
    torch.save(Baseline(backbone="resnet10t").state_dict(), path)


class NotTensors:  # a pickle weights_only=True refuses
    pass


def _refused_pickle(path: Path) -> None:
    torch.save({"model": NotTensors()}, path)


def _garbage(path: Path) -> None:
    path.write_text("{not json")


MODEL = "models/ff_c23/dpl/seed0/model.pt"
TRAIN = "`python -m benchmark train method=dpl train_set=ff_c23 seed=0`"
EVALUATE = ["evaluate", "method=dpl", "protocol=cross_quality"]


@pytest.mark.parametrize("snap, rel, damage, argv, fragments", [
    ("evaluate", MODEL, _truncate, EVALUATE, ["model.pt cannot be loaded", TRAIN]),
    ("evaluate", MODEL, _refused_pickle, EVALUATE, ["model.pt cannot be loaded", TRAIN]),
    ("evaluate", MODEL, _foreign_model, EVALUATE, ["model.pt was made with another configuration of DPL", TRAIN]),
    ("evaluate", "data/faces/ff/manifest.parquet", _truncate, EVALUATE,
     ["manifest.parquet is truncated or not a parquet table", "python -m benchmark extract dataset=ff"]),
    ("evaluate", "data/indicators/ff.json", _garbage, EVALUATE,
     ["ff.json is truncated or not JSON", "python -m benchmark indicators dataset=ff"]),
    ("report", "results/scores/cross_quality/dpl/ff_c23_seed0.parquet", _truncate, ["report"],
     ["ff_c23_seed0.parquet is truncated", "python -m benchmark evaluate protocol=cross_quality method=dpl seed=0"]),
    ("report", "data/indicators/ff.parquet", _truncate, ["analyze", "method=dpl"],
     ["ff.parquet is truncated", "python -m benchmark indicators dataset=ff"]),
    ("final", "results/reference.json", _garbage, ["check-regression"],
     ["reference.json is truncated or not JSON", "update-reference"]),
])
def test_a_corrupt_artefact_is_one_line_naming_it_and_the_stage_to_rerun(faults, tmp_path, monkeypatch, capsys, snap,
                                                                         rel, damage, argv, fragments):
    src = faults["base"] / "reference" if snap == "final" else faults["snaps"] / snap
    proj = shutil.copytree(src, tmp_path / "p", symlinks=True)
    if rel == "results/reference.json":  # the tiny project has none of its own
        shutil.copy(ROOT / rel, proj / rel)
    damage(proj / rel)
    before = {p: p.read_bytes() for p in _visible(proj)}
    rc, err = _main(argv, proj, monkeypatch, capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert all(f in err for f in fragments), err
    assert {p: p.read_bytes() for p in _visible(proj)} == before  # nothing written


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: torch.save([1, 2, 3], p), "hold a list, not a state dict"),
    (_refused_pickle, "weights_only=True refuses"),
    (lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "cannot be read by torch.load"),
    (lambda p: torch.save({"fc.weight": torch.zeros(3, 3)}, p), "match no parameter"),
])
def test_a_bad_pretrained_weights_file_is_refused_before_any_stage(faults, tmp_path, monkeypatch, capsys, damage,
                                                                  fragment):
    proj = shutil.copytree(faults["snaps"] / "train", tmp_path / "p", symlinks=True)
    damage(tmp_path / "weights.pth")
    before = {p: p.read_bytes() for p in _visible(proj)}
    rc, err = _main(["train", "method=baseline", f"methods.baseline.pretrained={tmp_path / 'weights.pth'}"], proj,
                    monkeypatch, capsys)
    assert rc == 2 and err.count("\n") == 1 and fragment in err and "weights.pth" in err, err
    assert {p: p.read_bytes() for p in _visible(proj)} == before and not (proj / "models").exists()
