"""Training any registered method, on mmengine's Runner.

What mmengine provides and we use as is: the epoch loop (``train_cfg``), the
optimiser wrapper built from params (``optim_wrapper``), the seeded sampler
(``DefaultSampler``, reshuffled per epoch from the seed), per-epoch
checkpointing (``CheckpointHook``), automatic resume from the last checkpoint
(``resume=True``), logging and seeding (``randomness``).

What we add, in three small hooks/adapters:

* ``MethodModel`` adapts a :class:`benchmark.method.Method` to mmengine's
  ``BaseModel``; its data preprocessor turns uint8 crops into floats and, for
  methods that require ``indicator_levels``, computes VQI/FII levels on the very
  image the method sees (after augmentation).
* ``PlainCheckpointHook`` keeps checkpoints to tensors and plain types, and the
  local-file checkpoint loader is replaced by one that loads with
  ``weights_only=True`` (mmengine 0.10.7 stores message-hub objects and numpy
  arrays, which torch's safe loader refuses).
* ``EpochSeedHook`` reseeds torch and the augmentation at every epoch from
  (seed, epoch), so a run resumed after an interruption is bit-identical to an
  uninterrupted one.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmengine.hooks import Hook
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import HOOKS
from mmengine.runner import CheckpointLoader, Runner
from torch.utils.data import DataLoader

from benchmark import io
from benchmark.errors import UserError


@CheckpointLoader.register_scheme(prefixes="", force=True)
def _load_local_safely(filename, map_location):
    return torch.load(filename, map_location=map_location, weights_only=True)


def _plain(obj):
    """Only tensors, numbers, strings and containers of them (numpy → python)."""
    if isinstance(obj, np.generic):  # before float: np.float64 subclasses float
        return obj.item()
    if isinstance(obj, (torch.Tensor, str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, dict):
        return {k: v for k, v in ((k, _plain(v)) for k, v in obj.items()) if v is not _DROP}
    if isinstance(obj, (list, tuple)):
        return type(obj)(v for v in map(_plain, obj) if v is not _DROP)
    return _DROP


_DROP = object()
_RUNS = itertools.count()  # mmengine keys global loggers/visualizers by experiment name


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub", {})
        checkpoint["message_hub"] = {"log_scalars": {}, "resumed_keys": _plain(hub.get("resumed_keys", {})),
                                     "runtime_info": _plain(hub.get("runtime_info", {}))}
        for key in list(checkpoint):
            checkpoint[key] = _plain(checkpoint[key])


@HOOKS.register_module()
class ProgressHook(Hook):
    """A tqdm bar over all iterations with the running loss (mmengine logs only warnings)."""

    def before_train(self, runner) -> None:
        from tqdm import tqdm
        self.bar = tqdm(total=runner.max_iters, initial=runner.iter, desc="train", unit="it", leave=False)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.bar.update(1)
        self.bar.set_postfix(epoch=runner.epoch + 1, loss=f"{float(outputs['loss']):.4f}")

    def after_train(self, runner) -> None:
        self.bar.close()


@HOOKS.register_module()
class EpochSeedHook(Hook):
    def __init__(self, seed: int):
        self.seed = seed

    def before_train_epoch(self, runner) -> None:
        torch.manual_seed(self.seed * 100_003 + runner.epoch)
        runner.train_dataloader.dataset.epoch = runner.epoch


class LevelsPreprocessor(BaseDataPreprocessor):
    """uint8 → float in [0, 1]; adds indicator levels when the method asks for them."""

    def __init__(self, levels=None):
        super().__init__()
        self._levels = [levels]  # a list keeps a (possibly CLIP-sized) indicator out of state_dict

    def forward(self, data: dict, training: bool = False) -> dict:
        data = dict(data)
        images = data["image"]
        if self._levels[0] is not None:
            vqi, fii = self._levels[0](images)
            data["vqi_level"], data["fii_level"] = vqi, fii
        data["image"] = images.float().div_(255)
        if "image_pair" in data:  # capability quality_pair (TrainFrames)
            data["image_pair"] = data["image_pair"].float().div_(255)
        return {"batch": data}


class MethodModel(BaseModel):
    def __init__(self, method, levels=None):
        needs = levels if "indicator_levels" in method.requires else None
        super().__init__(data_preprocessor=LevelsPreprocessor(needs))
        self.method = method

    def train_step(self, data: dict, optim_wrapper) -> dict:
        """mmengine's step, with the optimisation itself left to the method (``Method.train_step``)."""
        with optim_wrapper.optim_context(self):
            batch = self.data_preprocessor(data, True)["batch"]
            losses = self.method.train_step(batch, optim_wrapper)
        return {k: v.detach() for k, v in losses.items()}

    def forward(self, batch: dict, mode: str = "tensor"):
        out = self.method(batch)
        if mode == "loss":
            return self.method.loss(out, batch)
        return torch.sigmoid(out["logit"])


def train(method, dataset, work_dir: Path, cfg: dict, seed: int, levels=None, fingerprint: str = "") -> dict:
    """Train ``method`` on ``dataset`` (a ``TrainFrames``) into ``work_dir``.

    ``cfg`` is params.yaml ``train``. Resumes from ``work_dir``'s last
    checkpoint when one exists for the same ``fingerprint``; writes
    ``model.pt`` (the method's tensors only) and ``train.json`` at the end.
    A method with several ``training_stages`` runs each as its own Runner
    under ``work_dir/<stage>/`` (see ``run_stages``).
    """
    work_dir = Path(work_dir)
    run_file = work_dir / "run.json"
    if work_dir.exists() and (not run_file.is_file() or json.loads(run_file.read_text()).get("fingerprint") != fingerprint):
        shutil.rmtree(work_dir)  # a different configuration: never resume from it
    work_dir.mkdir(parents=True, exist_ok=True)
    io.write_json(run_file, {"fingerprint": fingerprint})
    dataset.seed = seed
    loader = DataLoader(dataset, batch_size=cfg["batch_size"], num_workers=cfg.get("num_workers", 0),
                        sampler=DefaultSampler(dataset, shuffle=True, seed=seed), drop_last=False)
    start = time.perf_counter()
    stages = run_stages(method, loader, work_dir, cfg, seed, levels)
    summary = {
        "epochs": sum(s["epochs"] for s in stages), "iters": sum(s["iters"] for s in stages),
        "seconds": round(time.perf_counter() - start, 1), "final_loss": stages[-1]["final_loss"],
        "provenance": method.provenance(), "fingerprint": fingerprint,
    }
    if len(stages) > 1:
        summary["stages"] = stages
    io.save_tensors(work_dir / "model.pt", method.state_dict())
    io.write_json(work_dir / "train.json", summary)
    return summary


def run_stages(method, loader, work_dir: Path, cfg: dict, seed: int, levels=None) -> list[dict]:
    """Run ``method.training_stages(cfg["epochs"])`` in order, each its own resumable Runner.

    One stage trains in ``work_dir`` itself; several in ``work_dir/<name>/``. Before a stage
    ``method.set_stage(name)`` freezes what it does not train; the optimiser holds only the
    parameters left trainable. A later stage starts from the previous stage's last epoch, or
    from the epoch ``method.stage_checkpoint(name)`` names (then the previous stage keeps
    every epoch's checkpoint); a stage with its own checkpoint resumes from that instead.
    """
    plan = method.training_stages(cfg["epochs"])
    out = []
    for i, (name, epochs) in enumerate(plan):
        stage_dir = work_dir if len(plan) == 1 else work_dir / name
        nxt = plan[i + 1][0] if i + 1 < len(plan) else None
        keep_all = nxt is not None and method.stage_checkpoint(nxt) is not None
        method.set_stage(name)
        pick = method.stage_checkpoint(name)
        if i > 0 and pick is not None:
            ckpt = work_dir / plan[i - 1][0] / f"epoch_{pick}.pth"
            if not ckpt.is_file():
                raise UserError(f"stage {name} should start from {ckpt}, which does not exist; "
                                f"choose an epoch of stage {plan[i - 1][0]} (1..{plan[i - 1][1]}) or 'last'")
            state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
            method.load_state_dict({k[len("method."):]: v for k, v in state.items() if k.startswith("method.")})
        out.append({"stage": name, **_run_one(method, loader, stage_dir, cfg, epochs, seed, levels, keep_all)})
    return out


def _run_one(method, loader, work_dir: Path, cfg: dict, epochs: int, seed: int, levels, keep_all: bool) -> dict:
    from mmengine.optim import OptimWrapper
    from mmengine.registry import OPTIMIZERS
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.build({**cfg["optimizer"], "params": params})
    runner = Runner(
        model=MethodModel(method, levels),
        work_dir=str(work_dir),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper=OptimWrapper(optimizer=optimizer),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=-1 if keep_all else 1),
                           logger=dict(type="LoggerHook", interval=max(1, len(loader) // 4))),
        custom_hooks=[dict(type="PlainCheckpointHook"), dict(type="EpochSeedHook", seed=seed),
                      dict(type="ProgressHook")],
        randomness=dict(seed=seed, deterministic=True),
        resume=True,
        log_level="WARNING",  # the per-iteration losses still go to work_dir/<timestamp>/*.log
        default_scope="mmengine",
        # unique per Runner: the default (a timestamp) makes two runs started in the
        # same second share a visualizer that writes into the first run's directory
        experiment_name=f"{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUNS)}",
    )
    start = time.perf_counter()
    runner.train()
    return {"epochs": epochs, "iters": runner.iter, "seconds": round(time.perf_counter() - start, 1),
            "final_loss": _last_loss(runner)}


def _last_loss(runner) -> float:
    """The last logged training loss; NaN when the stage was already complete (nothing ran)."""
    scalar = runner.message_hub.log_scalars.get("train/loss")
    return float(scalar.current()) if scalar is not None else float("nan")


def load_trained(method, work_dir: Path):
    """Load ``model.pt`` (weights_only) into ``method`` and put it in eval mode."""
    path = Path(work_dir) / "model.pt"
    if not path.is_file():
        raise UserError(f"no trained model at {path}; run `python -m benchmark train` (or dvc repro) first")
    method.load_state_dict(io.load_tensors(path))
    return method.eval()
