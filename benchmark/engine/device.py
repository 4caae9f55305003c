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


def channels_last(module: torch.nn.Module) -> torch.nn.Module:
    return module.to(memory_format=torch.channels_last)
