"""Data-parallel training over processes (params.yaml ``launcher``: none | pytorch | slurm).

``pytorch`` is one process per device started by ``torchrun`` (``tools/dist_train.sh``): it sets
RANK, LOCAL_RANK and WORLD_SIZE. ``slurm`` is one process per task started by ``srun``
(``tools/slurm_train.sh``): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and the first host of
SLURM_NODELIST become the same variables. ``init`` then joins the process group (NCCL on CUDA,
gloo on the CPU) and pins the process to ``cuda:LOCAL_RANK``. mmengine's own ``init_dist`` is not
used: it calls ``torch.cuda.set_device`` even for a CPU (gloo) run.

Why not torch's ``DistributedDataParallel`` (nor mmengine's ``MMDistributedDataParallel``, whose
``train_step`` calls the model's loss and ``update_params`` itself, bypassing ``Method.train_step``
-- QAD's weight perturbation and DPL's PPO would silently become plain steps): DDP averages
gradients only in a backward that follows *its* forward, once per forward. A method's own step
calls its own forward, may backpropagate several times per batch (QAD: clean then perturbed
loss; DPL stage II: ``ppo_epochs`` updates of one rollout) and must see the global batch's
gradient each time. So here the gradient is averaged by the optimiser wrapper: after every
``optim_wrapper.backward`` (``GradSync``; the method's ``update_params``/``backward`` calls go
through it) all ranks hold the mean gradient, one coalesced all-reduce per backward (no overlap
with the backward itself, unlike DDP's buckets: the price of owning the step). ``MethodParallel``
(the model wrapper mmengine's Runner sees) runs ``MethodModel.train_step`` -- hence the
method's ``train_step`` -- unchanged, then averages the floating-point buffers (BatchNorm
running statistics, UIA-ViT's Gaussian) over the ranks and the logged losses, so that every rank
holds the same model and the logs show the global batch's loss. With equal local batches the
mean of the ranks' mean losses is the global batch's mean loss, so a run on W processes of
batch B/W follows a one-process run of batch B up to float rounding, where the step does not
depend on the batch composition otherwise: BatchNorm's batch statistics do (``train.sync_bn``
makes them global on CUDA; torch's SyncBatchNorm does not run on the CPU) and so do random
draws from torch's global generator (each rank draws its own stream, seeded by rank).

Only rank 0 writes (``is_main``): checkpoints (mmengine's CheckpointHook), ``model.pt``,
``train.json``, ``history.csv``, the stage stamps and the progress bar.
"""
from __future__ import annotations

import atexit
import datetime
import os
import subprocess

import torch
import torch.distributed as dist
from mmengine.dist import all_reduce_params
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

from benchmark.engine import device as dev
from benchmark.errors import UserError

LAUNCHERS = ("none", "pytorch", "slurm")
_TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
_SLURM_ENV = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST")
TIMEOUT_S = 1800


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def launched_processes() -> int:
    """How many processes the launcher started for this step (1 outside torchrun/srun)."""
    return max(int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("SLURM_STEP_NUM_TASKS", 1)))


def _slurm_env() -> None:
    """SLURM's task variables as torchrun's (as mmengine's ``_init_dist_slurm`` does)."""
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ.setdefault("MASTER_PORT", "29500")
    if "MASTER_ADDR" not in os.environ:
        hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_NODELIST"]],
                               capture_output=True, text=True, check=True).stdout.split()
        os.environ["MASTER_ADDR"] = hosts[0]


def init(launcher: str, device_setting="auto") -> torch.device:
    """Join the launcher's process group (once) and return this process's device."""
    launcher = str(launcher or "none")
    if launcher not in LAUNCHERS:
        raise UserError(f"launcher={launcher!r} is unknown; choose one of: {', '.join(LAUNCHERS)}")
    if launcher == "none":
        return dev.resolve(device_setting)
    need = _TORCHRUN_ENV if launcher == "pytorch" else _SLURM_ENV
    missing = [v for v in need if v not in os.environ]
    if missing:
        how = "torchrun (tools/dist_train.sh)" if launcher == "pytorch" else "srun (tools/slurm_train.sh)"
        raise UserError(f"launcher={launcher} but {', '.join(missing)} not set: start the run with {how}")
    if launcher == "slurm":
        _slurm_env()
    device = dev.resolve(device_setting, local_rank=int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=TIMEOUT_S))
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return device


def average_gradients(params) -> None:
    """Replace every gradient by its mean over the ranks (one coalesced all-reduce)."""
    if world_size() > 1:
        all_reduce_params([p.grad for p in params if p.grad is not None], op="mean")


def global_count(n: torch.Tensor) -> torch.Tensor:
    """A count (hard samples, masked entries) over the global batch, as a rank's share of it:
    sum over the ranks / world size. A rank's loss ``local sum / max(global_count, 1/W)`` then
    averages (``GradSync``) to the one-process ``global sum / max(global n, 1)``; in one process
    it is ``n`` itself."""
    return global_sum(n.float()) / world_size()


def global_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` (no gradient) summed over the ranks: statistics of the global batch."""
    t = t.detach().clone()
    if world_size() > 1:
        dist.all_reduce(t)
    return t


def average(tensors) -> None:
    if world_size() > 1:
        all_reduce_params(list(tensors), op="mean")


class GradSync:
    """Mixin for mmengine optimiser wrappers: the gradient after ``backward`` is the global batch's."""

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        super().backward(loss, **kwargs)
        average_gradients(p for group in self.optimizer.param_groups for p in group["params"])


@MODEL_WRAPPERS.register_module()
class MethodParallel(nn.Module):
    """What mmengine's Runner trains: ``module`` (a ``MethodModel``) on one device, data-parallel
    over the launcher's processes (see the module docstring). Being a registered model wrapper,
    the Runner neither moves it to its own idea of the device nor wraps it in DDP."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self._saved = set(module.state_dict())  # persistent buffers: running statistics, not constants
        if world_size() > 1:  # every rank starts from rank 0's weights
            for t in (*module.parameters(), *module.buffers()):
                dist.broadcast(t.data, src=0)

    def train_step(self, data: dict, optim_wrapper) -> dict:
        losses = self.module.train_step(data, optim_wrapper)  # the method's own step
        if world_size() > 1:
            average(b for n, b in self.module.named_buffers() if n in self._saved and b.is_floating_point())
            values = torch.stack([v.float() for v in losses.values()])
            average([values])
            losses = dict(zip(losses, values.unbind()))
        return losses

    def val_step(self, data):
        return self.module.val_step(data)

    def test_step(self, data):
        return self.module.test_step(data)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def sync_batchnorm(module: nn.Module, device: torch.device, enabled: bool) -> nn.Module:
    """BatchNorm -> SyncBatchNorm for a multi-process CUDA run when ``enabled`` (``train.sync_bn``)."""
    if enabled and world_size() > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
