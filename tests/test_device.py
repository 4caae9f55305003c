"""The device setting, mixed precision, determinism, channels_last and the loaders' workers.

CPU tests run everywhere; the CUDA tests at the end run where torch sees a GPU and are skipped
with the reason elsewhere. bf16 runs on this machine's CPU (emulated without avx512_bf16: slower
than fp32, but the same code path as on a GPU).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import benchmark  # noqa: F401  (torchvision shim)
import numpy as np
import pytest
import torch
from benchmark import engine, io
from benchmark.data.frames import TrainFrames
from benchmark.engine import device as dev
from benchmark.engine import distributed, loaders, optim
from benchmark.errors import UserError
from benchmark.evaluation import score as ev
from test_engine import Tiny, frames, levels  # noqa: F401  (fixture: 12 tiny PNG crops)
from test_methods import NAMES, build, make_batch

ROOT = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch (CPU build or no GPU)")
CFG = {"epochs": 2, "batch_size": 4, "optimizer": {"type": "Adam", "lr": 0.01}}


class Noisy(Tiny):
    """test_engine's tiny method, its training forward drawing from torch's global generator (as
    DPL's window starts do)."""

    def forward(self, batch):
        out = super().forward(batch)
        return {"logit": out["logit"] + 0.1 * torch.randn_like(out["logit"])} if self.training else out


def _jpeg(img, rng):
    from benchmark.data.jpeg import jpeg
    return jpeg(img, int(rng.integers(10, 90)))


def _train(frames, work, cfg=None, device="auto", method=None):
    torch.manual_seed(0)
    method = method or Noisy()
    ds = TrainFrames(frames[0], frames[1], seed=0, augment=_jpeg)
    summary = engine.train(method, ds, work, {**CFG, **(cfg or {})}, seed=0, levels=levels, fingerprint="fp",
                           device=device)
    return method.state_dict(), summary


# ---------------------------------------------------------------- the device setting
def test_device_setting_resolves_or_says_what_to_do():
    assert dev.resolve("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert dev.resolve("cpu") == dev.resolve("CPU") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown; choose auto, cpu, cuda or cuda:N"):
        dev.resolve("gpu")
    if not torch.cuda.is_available():
        for setting in ("cuda", "cuda:0"):
            with pytest.raises(UserError, match="torch sees no CUDA device.*use device=cpu"):
                dev.resolve(setting)


def test_precision_is_checked_against_the_device():
    cpu = torch.device("cpu")
    assert dev.amp_dtype("none", cpu) is None and dev.amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        dev.amp_dtype("fp16", cpu)
    with pytest.raises(UserError, match="amp='fp8' is unknown"):
        dev.amp_dtype("fp8", cpu)


def test_explicit_cpu_gives_the_same_bytes_as_the_default(frames, tmp_path):
    """On a CPU machine ``device: auto`` is the CPU: training and scores are byte-identical."""
    if torch.cuda.is_available():
        pytest.skip("auto resolves to CUDA on this machine")
    a, _ = _train(frames, tmp_path / "auto", device="auto")
    b, summary = _train(frames, tmp_path / "cpu", device="cpu")
    assert (tmp_path / "auto" / "model.pt").read_bytes() == (tmp_path / "cpu" / "model.pt").read_bytes()
    assert summary["compute"] == {"device": "cpu", "amp": "none", "channels_last": False, "launcher": "none",
                                  "world_size": 1, "deterministic": True, "nondeterministic_ops": [],
                                  "numerics": dev.numerics()}
    assert dev.numerics() == f"native (ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN on)"


# ---------------------------------------------------------------- mixed precision (CPU bf16)
class _Conditions:
    """Two test conditions: the crop as is and its horizontal mirror."""
    name, n_conditions, severities = "mirror", 2, (0, 1)

    def apply(self, img, c, seed, key):
        return (img if c == 0 else np.ascontiguousarray(img[:, ::-1])), c


class _Indicator:
    def score(self, images):
        m = images.float().mean((1, 2, 3)).cpu().double().numpy() / 255
        return {"vqi": m, "fii": 1 - m}

    def levels_from_scores(self, s):
        return tuple(torch.from_numpy(np.clip((v * 5).astype(np.int64) + 1, 1, 5)) for v in (s["vqi"], s["fii"]))


def test_bf16_training_and_evaluation_on_the_cpu_give_finite_scores(frames, tmp_path):
    state, summary = _train(frames, tmp_path / "bf16", {"amp": "bf16"}, device="cpu")
    assert math.isfinite(summary["final_loss"]) and summary["compute"]["amp"] == "bf16"
    fp32, _ = _train(frames, tmp_path / "fp32", device="cpu")
    assert not all(torch.equal(state[k], fp32[k]) for k in state)  # bf16 really computed in bf16
    method = Noisy()
    method.load_state_dict(io.load_tensors(tmp_path / "bf16" / "model.pt"))
    rows = frames[0].assign(quality="c23", video_id=[f"v{i}" for i in range(12)], frame_idx=0, manipulation="real")
    out = {amp: ev.score(method, rows, frames[1], _Conditions(), _Indicator(), 8, 0, "cpu", {"amp": amp})
           for amp in ("none", "bf16")}
    assert len(out["bf16"]) == 24 and np.isfinite(out["bf16"]["score"]).all()
    assert np.abs(out["bf16"]["score"] - out["none"]["score"]).max() < 0.05  # bf16 ~ 3 significant digits


@pytest.mark.parametrize("name", NAMES)
def test_every_method_trains_and_scores_under_cpu_bf16_autocast(name):
    """Every stage's own train_step (QAD's AWP, DPL's PPO) under mmengine's AMP wrapper on the CPU."""
    method = build(name)
    model = engine.MethodModel(method)
    batch = make_batch(method, n=2)
    for stage, _ in method.training_stages(1):
        method.set_stage(stage)
        method.train()
        wrapper = optim.optim_wrapper(method, {"optimizer": {"type": "Adam", "lr": 1e-4}}, "bf16", "cpu")
        with wrapper.optim_context(model):
            losses = method.train_step(batch, wrapper)
        assert all(torch.isfinite(v).all() for v in losses.values()), (stage, losses)
    with torch.no_grad(), dev.autocast(torch.device("cpu"), "bf16"):
        prob = torch.sigmoid(method.eval()(batch)["logit"].float())
    assert torch.isfinite(prob).all() and ((prob >= 0) & (prob <= 1)).all()


# ---------------------------------------------------------------- determinism
class PutOp(Noisy):
    """Uses Tensor.put_, which has no deterministic CPU kernel in torch."""

    def forward(self, batch):
        out = super().forward(batch)
        scratch = torch.zeros(4).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))
        return {"logit": out["logit"] + 0 * scratch.sum()}


def test_ops_without_a_deterministic_kernel_are_listed_not_fatal(frames, tmp_path):
    _, summary = _train(frames, tmp_path / "det", device="cpu", method=PutOp())
    assert summary["compute"]["nondeterministic_ops"] == ["put_"]
    assert json.loads((tmp_path / "det" / "train.json").read_text())["compute"]["nondeterministic_ops"] == ["put_"]
    _, summary = _train(frames, tmp_path / "free", {"deterministic": False}, device="cpu", method=PutOp())
    assert summary["compute"]["nondeterministic_ops"] == [] and not torch.are_deterministic_algorithms_enabled()
    dev.set_deterministic(True, torch.device("cpu"))  # the CPU default, for the tests that follow


def test_other_warnings_pass_through_the_op_listing():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with dev.nondeterministic_ops() as ops:
            warnings.warn("something else")
            warnings.warn("index_foo does not have a deterministic implementation, but you set ...")
            warnings.warn("index_foo does not have a deterministic implementation, but you set ...")
    assert ops == ["index_foo"]
    assert [str(w.message) for w in seen][0] == "something else" and len(seen) == 2  # the op shown once


# ---------------------------------------------------------------- layout and loaders
def test_channels_last_trains(frames, tmp_path):
    method = Noisy()
    _, summary = _train(frames, tmp_path / "cl", {"channels_last": True}, device="cpu", method=method)
    assert math.isfinite(summary["final_loss"]) and summary["compute"]["channels_last"]
    assert method.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_results_do_not_depend_on_the_loader_workers(frames, tmp_path):
    """Items are seeded by (seed, epoch, index) and the loader never draws from torch's global
    generator, which the method uses: 0 workers, 2 workers and 2 persistent workers give the same
    bytes (epoch 2 included, which a persistent worker's dataset copy would get wrong)."""
    base, _ = _train(frames, tmp_path / "w0", device="cpu")
    for name, cfg in (("w2", {"num_workers": 2}), ("p2", {"num_workers": 2, "persistent_workers": True,
                                                           "prefetch_factor": 1})):
        other, _ = _train(frames, tmp_path / name, cfg, device="cpu")
        assert all(torch.equal(base[k], other[k]) for k in base), name


def test_the_sampler_carries_the_epoch_into_persistent_workers(frames):
    ds = TrainFrames(frames[0], frames[1], seed=0, augment=_jpeg)
    loader = loaders.train_loader(ds, 4, {"num_workers": 2, "persistent_workers": True}, seed=0)
    seen = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        got = torch.cat([b["image"] for b in loader])
        order = [i for _, i in loader.sampler]
        ds.epoch = epoch  # the main process's copy; the workers only know what the sampler tells them
        assert torch.equal(got, torch.stack([ds[i]["image"] for i in order])), epoch
        seen.append(got[np.argsort(order)])
    assert not torch.equal(seen[0], seen[1])  # epoch 2 draws other JPEG qualities


def test_loader_options():
    cpu = torch.device("cpu")
    assert loaders.loader_options({}, cpu)["pin_memory"] is False  # auto: pinned only for CUDA
    opts = loaders.loader_options({"num_workers": 3, "persistent_workers": True, "prefetch_factor": 4}, cpu)
    assert (opts["num_workers"], opts["persistent_workers"], opts["prefetch_factor"]) == (3, True, 4)
    with pytest.raises(UserError, match="num_workers=-1"):
        loaders.loader_options({"num_workers": -1}, cpu)


def test_evaluation_workers_give_the_same_scores(frames):
    rows = frames[0].assign(quality="c23", video_id=[f"v{i}" for i in range(12)], frame_idx=0, manipulation="real")
    torch.manual_seed(0)
    method = Noisy()
    a = ev.score(method, rows, frames[1], _Conditions(), _Indicator(), 8, 0, "cpu", {"num_workers": 0})
    b = ev.score(method, rows, frames[1], _Conditions(), _Indicator(), 8, 0, "cpu", {"num_workers": 2})
    assert a.equals(b)


# ---------------------------------------------------------------- launchers
def test_a_launcher_without_its_environment_is_one_line(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match="RANK, LOCAL_RANK, WORLD_SIZE not set: start the run with torchrun"):
        distributed.init("pytorch", "cpu")
    with pytest.raises(UserError, match="not set: start the run with srun"):
        distributed.init("slurm", "cpu")
    with pytest.raises(UserError, match="launcher='mpi' is unknown"):
        distributed.init("mpi", "cpu")


def test_slurm_variables_become_the_process_group(tmp_path):
    """One srun task as SLURM describes it (no scontrol needed when MASTER_ADDR is set)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_LOCALID="0", SLURM_NODELIST="node1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    code = ("from benchmark.engine import distributed as d; import os; dv = d.init('slurm', 'cpu'); "
            "print(dv, d.world_size(), d.rank(), os.environ['RANK'], os.environ['LOCAL_RANK'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["cpu", "1", "0", "0", "0"]


def test_only_train_runs_under_a_multi_process_launch(monkeypatch, capsys):
    from benchmark import cli
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["report"]) == 2
    assert "only `train` runs data-parallel" in capsys.readouterr().err


# ---------------------------------------------------------------- CUDA (skipped without a GPU)
@CUDA
def test_cuda_training_and_evaluation_stay_on_the_gpu(frames, tmp_path):
    method = Noisy()
    state, summary = _train(frames, tmp_path / "cuda", {"amp": "bf16", "channels_last": True}, device="cuda",
                            method=method)
    assert summary["compute"]["device"].startswith("cuda:0")
    assert next(method.parameters()).device.type == "cuda"
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == dev.CUBLAS_WORKSPACE
    assert all(v.device.type == "cpu" for v in io.load_tensors(tmp_path / "cuda" / "model.pt").values())
    rows = frames[0].assign(quality="c23", video_id=[f"v{i}" for i in range(12)], frame_idx=0, manipulation="real")
    out = ev.score(method, rows, frames[1], _Conditions(), _Indicator(), 8, 0, "cuda", {"amp": "fp16"})
    assert np.isfinite(out["score"]).all()


@CUDA
def test_cuda_fp16_with_loss_scaling_trains(frames, tmp_path):
    _, summary = _train(frames, tmp_path / "fp16", {"amp": "fp16"}, device="cuda")
    assert math.isfinite(summary["final_loss"])


@CUDA
def test_cpu_on_a_gpu_machine_stays_on_the_cpu(frames, tmp_path):
    method = Noisy()
    _, summary = _train(frames, tmp_path / "cpu", device="cpu", method=method)
    assert summary["compute"]["device"] == "cpu" and next(method.parameters()).device.type == "cpu"


@CUDA
def test_the_preprocessor_moves_batches_to_the_model_device():
    model = engine.MethodModel(Noisy(), levels).to("cuda")
    data = {"image": torch.zeros(2, 3, 8, 8, dtype=torch.uint8).pin_memory(), "label": torch.tensor([0, 1])}
    batch = model.data_preprocessor(data, True)["batch"]
    assert {v.device.type for v in batch.values()} == {"cuda"}


# ---------------------------------------------------------------- numerics: native | portable
# A short training of a small conv net in a new process, its weights' digest printed; a narrower
# CPU is emulated by capping the ISA oneDNN, MKL and ATen may use.
PROBE = """
import hashlib, sys
import benchmark
from benchmark.engine import device
device.set_numerics(sys.argv[1])
import torch
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2),
                    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2))
opt = torch.optim.AdamW(net.parameters(), 1e-2)
x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 2, (16,))
for _ in range(5):
    loss = nn.functional.cross_entropy(net(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
print(device.numerics())
print(hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest())
"""
AVX2_ONLY = dev.AVX2_ONLY_ENV
NEEDS_AVX2 = pytest.mark.skipif(not torch.cpu._is_avx2_supported(), reason="numerics=portable needs an AVX2 CPU")


def _probe(mode: str, **env) -> tuple[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", *AVX2_ONLY)}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**clean, **env}, cwd=ROOT).stdout.split("\n")
    return out[0], out[1]


@NEEDS_AVX2
def test_portable_numerics_give_the_same_bits_on_a_narrower_cpu():
    how, here = _probe("portable")
    assert how == "portable (ATen AVX2, oneDNN off)"
    assert _probe("portable", **AVX2_ONLY)[1] == here


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() == "AVX2",
                    reason="this CPU is itself AVX2-only: native and the emulated AVX2 CPU are the same")
def test_native_numerics_differ_on_a_narrower_cpu():
    """The control of the test above: without portable numerics the emulated CPU rounds otherwise
    (so that test can fail), as a CI runner of another CPU model did."""
    how, here = _probe("native")
    assert how.startswith("native (ATen ") and _probe("native", **AVX2_ONLY)[1] != here


@NEEDS_AVX2
def test_portable_numerics_after_torch_computed_is_one_line_and_changes_nothing():
    torch.ones(2).sum()  # torch fixes its ISA at its first operation
    before = (os.environ.get("ATEN_CPU_CAPABILITY"), os.environ.get("MKL_CBWR"), torch.backends.mkldnn.enabled)
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        pytest.skip("this process already computes at AVX2")
    with pytest.raises(UserError, match=r"^numerics=portable: torch already computed at \w+ in this process"):
        dev.set_numerics("portable")
    assert (os.environ.get("ATEN_CPU_CAPABILITY"), os.environ.get("MKL_CBWR"), torch.backends.mkldnn.enabled) == before
    with pytest.raises(UserError, match="numerics='fast' is unknown; choose native or portable"):
        dev.set_numerics("fast")
