"""Where and how the harness computes: the one ``device`` setting, precision, determinism, layout.

* ``resolve(setting)``: params.yaml ``device`` -- ``auto`` (CUDA when torch sees a GPU, else the
  CPU), ``cpu``, ``cuda`` (the current GPU; under a launcher, the process's ``LOCAL_RANK``) or
  ``cuda:N``. A CUDA setting on a machine without a visible GPU is a one-line ``UserError``,
  never a silent fall-back to the CPU.
* ``PRECISIONS`` / ``amp_dtype`` / ``autocast``: ``none`` (fp32), ``bf16``, ``fp16``, as
  ``torch.autocast`` of the device's type. fp16 needs CUDA (its loss scaling is CUDA's
  ``GradScaler``); bf16 runs on the CPU too (oneDNN uses AMX-bf16 where the CPU has it and
  emulates bf16 elsewhere, where it is not faster than fp32 -- but testable).
* ``set_deterministic(on, device)`` and ``nondeterministic_ops()``: ``train.deterministic``.
  On: ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic and not
  benchmarking, and on CUDA ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS needs it for
  reproducible matmuls, set before its first use). An op without a deterministic kernel then
  warns instead of stopping training; ``nondeterministic_ops()`` collects their names (shown
  once each) for ``train.json``. Off: cuDNN may pick its fastest kernels (``benchmark=True``).
* ``set_numerics(mode)`` / ``numerics()``: params.yaml ``numerics``, how the CPU does float
  arithmetic. ``native``: torch's fastest kernels for this CPU (ATen's widest vector ISA, oneDNN,
  NNPACK), whose rounding differs between CPU models; a training amplifies a last-bit
  difference, so the same seed ends apart on two machines (the CI grid's baseline: up to 0.064
  AUC between AVX-512 and an emulated AVX2-only CPU; on a CI runner the grid's AUCs moved by up
  to 0.12 and failed the check). ``portable``: the same bits on every x86-64 CPU with AVX2 --
  ATen at AVX2 (``ATEN_CPU_CAPABILITY``), MKL in its AVX2 reproducibility branch (``MKL_CBWR``,
  guaranteed by Intel on its CPUs; other vendors' AVX2 CPUs run the same branch, not
  guaranteed), oneDNN and NNPACK off (their blocking follows the CPU) -- at more CPU time
  (``benchmarks/numerics.py`` measures it). Set before torch's first operation in the process
  (the CLI does, for the stage verbs); CUDA kernels are not affected.
* ``channels_last(module)``: NHWC memory layout of the 4-d weights (tensor cores prefer it).
* ``describe(device)``: "cpu" or "cuda:0 (NVIDIA H200)" for provenance.
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings

import torch

from benchmark.errors import UserError

PRECISIONS = ("none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CUBLAS_WORKSPACE = ":4096:8"
_ALERT = re.compile(r"^(.*?) does not have a deterministic implementation")


def resolve(setting="auto", local_rank: int | None = None) -> torch.device:
    """The torch device params.yaml ``device`` names (see the module docstring)."""
    s = str(setting if setting is not None else "auto").strip().lower()
    if s == "auto":
        s = "cuda" if torch.cuda.is_available() else "cpu"
    if s == "cpu":
        return torch.device("cpu")
    if s != "cuda" and not re.fullmatch(r"cuda:\d+", s):
        raise UserError(f"device={setting!r} is unknown; choose auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"device={setting} but torch sees no CUDA device (torch {torch.__version__}, "
                        f"CUDA build: {torch.version.cuda or 'none'}); use device=cpu, or install a CUDA build of torch")
    if ":" in s and local_rank is not None:
        raise UserError(f"device={setting}: under a launcher every process takes cuda:LOCAL_RANK; set device=cuda or auto")
    index = int(s.split(":")[1]) if ":" in s else (local_rank if local_rank is not None else torch.cuda.current_device())
    if not 0 <= index < torch.cuda.device_count():
        raise UserError(f"device {setting} (index {index}) does not exist: torch sees {torch.cuda.device_count()} "
                        f"CUDA device(s); check CUDA_VISIBLE_DEVICES")
    return torch.device("cuda", index)


def describe(device: torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (None for ``none``), checked against the device."""
    amp = str(amp or "none")
    if amp not in PRECISIONS:
        raise UserError(f"amp={amp!r} is unknown; choose one of: {', '.join(PRECISIONS)}")
    if amp == "fp16" and device.type != "cuda":
        raise UserError(f"amp=fp16 needs a CUDA device (its loss scaling is CUDA's); on {device} use amp=bf16 or none")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"amp=bf16: {describe(device)} has no bfloat16 support; use amp=fp16 or none")
    return _DTYPES.get(amp)


def autocast(device: torch.device, amp: str = "none"):
    """``torch.autocast`` of ``device``'s type at ``amp`` precision; a no-op context for ``none``."""
    dtype = amp_dtype(amp, device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def set_deterministic(on: bool, device: torch.device) -> None:
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(bool(on), warn_only=True)
    torch.backends.cudnn.deterministic = bool(on)
    torch.backends.cudnn.benchmark = not on


@contextlib.contextmanager
def nondeterministic_ops():
    """Yields the list of ops that ran without a deterministic kernel (torch's alerts under
    ``warn_only``), each shown once; other warnings pass through unchanged."""
    found: list[str] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=r".*does not have a deterministic implementation")
        show = warnings.showwarning

        def record(message, category, filename, lineno, file=None, line=None):
            hit = _ALERT.search(str(message))
            if hit is None:
                return show(message, category, filename, lineno, file, line)
            if hit.group(1) not in found:
                found.append(hit.group(1))
                show(f"{hit.group(1)} has no deterministic kernel: this run is not bit-reproducible "
                     f"(train.deterministic=true lists it in train.json)", category, filename, lineno, file, line)

        warnings.showwarning = record
        yield found


NUMERICS = ("native", "portable")
PORTABLE_ISA = "AVX2"
#: the environment that makes an AVX-512 CPU compute as an AVX2-only one would (oneDNN, MKL and
#: ATen capped at AVX2): how the tests and benchmarks/numerics.py check portable numerics
AVX2_ONLY_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
_numerics = "native"


def set_numerics(mode: str) -> None:
    """Apply params.yaml ``numerics`` (module docstring) to this process and its children."""
    global _numerics
    if mode not in NUMERICS:
        raise UserError(f"numerics={mode!r} is unknown; choose native or portable")
    if mode == "native":
        return
    if not torch.cpu._is_avx2_supported():
        raise UserError("numerics=portable needs an x86-64 CPU with AVX2, which this machine lacks; "
                        "use numerics=native (its numbers then match only machines of this kind)")
    before = os.environ.get("ATEN_CPU_CAPABILITY")
    os.environ["ATEN_CPU_CAPABILITY"] = PORTABLE_ISA.lower()  # read at torch's first dispatch
    got = torch.backends.cpu.get_cpu_capability()
    if got != PORTABLE_ISA:  # torch fixed its ISA at a first operation: leave the process as it was
        if before is None:
            del os.environ["ATEN_CPU_CAPABILITY"]
        else:
            os.environ["ATEN_CPU_CAPABILITY"] = before
        raise UserError(f"numerics=portable: torch already computed at {got} in this process (its first "
                        f"operation ran before the setting); run the command in a new process")
    os.environ["MKL_CBWR"] = PORTABLE_ISA  # read at MKL's first call, which comes later
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    _numerics = mode


def numerics() -> str:
    """How this process computes on the CPU, for train.json and the scores files."""
    onednn = "on" if torch.backends.mkldnn.enabled else "off"
    return f"{_numerics} (ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN {onednn})"


def channels_last(module: torch.nn.Module) -> torch.nn.Module:
    return module.to(memory_format=torch.channels_last)
