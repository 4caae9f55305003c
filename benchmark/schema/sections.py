"""Every params.yaml key, declared once: one mapping per section, one line per key (its kind,
default, what is allowed, what it does). Nested mappings use dotted names (``pairs.train``).

``datasets`` and ``methods`` hold entries a user names: ``DATASET_ENTRY`` declares the keys of
one ``datasets.<id>`` entry; a ``methods.<name>`` entry's options are its class's constructor
arguments (checked by ``benchmark.schema.methods``), not declared here.

Adding a params key = one line here (``tests/test_schema.py`` checks that every params.yaml key
is declared and every declared key is in params.yaml, with that default).
"""
from __future__ import annotations

from benchmark import registry
from benchmark.schema.keys import Bool, Choice, Dict, Float, Int, List, Pattern, Str

QUALITIES = ("raw", "c23", "c40")  # benchmark.data.layout.QUALITIES (kept import-free here)
SPLITS = ("train", "val", "test")
LEVELS = ("frame", "video")


def _registered(reg):
    return lambda: registry.choices(reg)


def _manipulations():
    from benchmark.data.synthff import KINDS
    return list(KINDS)


def _schedulers():
    import mmengine.optim  # noqa: F401  (registers the parameter schedulers)
    from mmengine.registry import PARAM_SCHEDULERS
    return sorted(PARAM_SCHEDULERS.module_dict)


def _optimizers():
    import mmengine.optim  # noqa: F401  (registers torch's optimizers)
    from mmengine.registry import OPTIMIZERS
    return sorted(n for n in OPTIMIZERS.module_dict if n != "Optimizer")


SEED = Int(0, "a random seed", min=0)
AMP = Choice("none", "autocast precision: none (fp32), bf16, or fp16 (CUDA only)", choices=("none", "bf16", "fp16"))
PIN = Choice("auto", "pinned host memory: auto (on CUDA), true or false", choices=("auto", True, False))
PREFETCH = Int(2, "batches each DataLoader worker loads ahead (with num_workers > 0)", min=1)
LAYOUT = Bool(False, "channels_last (NHWC) layout of the model and its batches")

#: top-level scalar keys (the rest of params.yaml are sections); device and launcher are not part of any
#: stage's key, numerics is part of the key of every stage whose numbers torch computes
TOP = {
    "device": Pattern("auto", "where train, evaluate, indicators, cost, plots and analyze compute",
                      regex=r"auto|cpu|cuda(:\d+)?", shape="auto, cpu, cuda or cuda:N"),
    "launcher": Choice("none", "how `train` runs: one process, torchrun or SLURM tasks (data-parallel)",
                       choices=("none", "pytorch", "slurm")),
    "numerics": Choice("native", "CPU float arithmetic: native (fastest for this CPU) or portable (the same bits "
                       "on every AVX2 x86-64 CPU; benchmark/engine/device.py)", choices=("native", "portable")),
}

SECTIONS = {
    "grid": {
        "methods": List(["baseline", "f3net", "srm", "spsl", "sia", "recce", "uia_vit", "qad", "ucf", "dpl"],
                        "methods entries `dvc repro` trains and evaluates", item=Str("", ""), min_len=1, unique=True),
        "protocols": List(["cross_quality", "cross_manipulation", "cross_dataset", "robustness", "ablation_components",
                           "ablation_backbone", "ablation_fusion", "ablation_lreg", "ablation_clip",
                           "ablation_reading"],
                          "protocols `dvc repro` runs (dvc.yaml is rendered from them: python -m benchmark dag)",
                          item=Str("", ""), min_len=1, unique=True),
        "seeds": List([0], "training seeds of the grid (a DVC matrix)", item=SEED, min_len=1, unique=True),
        "jobs": Int(2, "stages `python -m benchmark run` runs at once", min=1),
        "threads": Int(1, "torch threads per stage process", min=1),
    },
    "synthff": {
        "seed": SEED,
        "pairs.train": Int(24, "SynthFF training pairs [target, source]", min=1),
        "pairs.val": Int(24, "SynthFF validation pairs (the val AUC that train.select: best_val picks an epoch by)", min=0),
        "pairs.test": Int(48, "SynthFF test pairs (48: headline AUC 95 % CI half-width about 0.05)", min=1),
        "frames": Int(16, "frames per SynthFF video", min=1),
        "size": Int(96, "SynthFF frame side in pixels", min=32),
        "crf.c23": Int(23, "libx264 CRF of the c23 videos", min=0, max=51),
        "crf.c40": Int(40, "libx264 CRF of the c40 videos", min=0, max=51),
    },
    "extract": {
        "frames_per_video": Int(8, "frames sampled evenly per video (community convention: 32)", min=1),
        "scale": Float(1.3, "face box enlargement", min=1.0),
        "size": Int(64, "stored crop side = model input size, px", min=16),
        "qualities": List(["c23", "c40"], "qualities extracted", item=Choice("", "", choices=QUALITIES),
                          min_len=1, unique=True),
        "workers": Int(1, "processes over videos (a killed extraction resumes)", min=1),
    },
    "distort": {
        "seed": Int(0, "seeds BW block places and GNC noise (per frame, order-free)", min=0),
        "qualities": List(["c23"], "clean crops that get distorted copies", item=Choice("", "", choices=QUALITIES),
                          min_len=1, unique=True),
        "splits": List(["test"], "splits distorted", item=Choice("", "", choices=SPLITS), min_len=1, unique=True),
        "options": Dict({"BW": {"min_factor": 1}}, "constructor options per distortion code"),
    },
    "indicators": {
        "backend": Choice("auto", "open_clip when its weights load, else fallback (auto), or a named backend",
                          choices=lambda: ["auto", *registry.choices(registry.INDICATORS)]),
        "model": Str("ViT-B-32", "open_clip model name"),
        "weights": Str(None, "local open_clip weights file; null = the open_clip cache only", nullable=True),
        "logit_scale": Bool(False, "multiply the cosine similarities by CLIP's logit scale in Eq. (1)"),
        "prompt_period": Bool(True, "prompts end with a full stop as printed (paper); false = without (the release)"),
        "binning": Choice("quantile", "quantile (paper: equal-frequency on the training split) or fixed "
                          "(the release's thresholds)", choices=("quantile", "fixed")),
        "round_percent": Bool(False, "round scores to a whole percent before binning (the release: true)"),
        "k": Int(5, "indicator levels K", min=1),
    },
    "train": {
        "epochs": Int(10, "training epochs (stage I of a multi-stage method)", min=1),
        "batch_size": Int(32, "training batch size", min=1),
        "optimizer": Dict({"type": "Adam", "lr": 1.0e-3, "weight_decay": 0.0},
                          "mmengine optimizer config (other keys go to the optimizer)",
                          required=("type", "lr"), fields={"type": Choice("Adam", "", choices=_optimizers),
                                  "lr": Float(1e-3, "", above=0.0), "weight_decay": Float(0.0, "", min=0.0)}),
        "param_scheduler": List([], "mmengine parameter-scheduler configs (empty = constant lr)",
                                item=Dict({}, "", fields={"type": Choice("", "", choices=_schedulers)}, required=("type",))),
        "clip_grad": Dict(None, "mmengine OptimWrapper clip_grad, e.g. {max_norm: 1.0}", nullable=True,
                          fields={"max_norm": Float(1.0, "", above=0.0)}),
        "recipe": Choice("shared", "shared: every method trains with these keys; own: each method's original "
                         "recipe", choices=("shared", "own")),
        "recipe_epochs": Choice("shared", "under recipe=own, whose epochs: shared (train.epochs; the CPU grid's "
                                "budget) or own (the original's)", choices=("shared", "own")),
        "sampler": Choice("balanced", "uniform (every crop once per epoch) or balanced (each fake with a random real, "
                          "as the DPL release)", choices=("uniform", "balanced")),
        "jpeg_aug": Bool(True, "random JPEG augmentation of the authors' release"),
        "views": Choice("single", "batch composition: single (each image once) or all_jpeg (every image in all "
                        "four JPEG versions in the step, benchmark/data/views.py)", choices=("single", "all_jpeg")),
        "val": Dict({"quality": "c40", "frames_per_video": None, "batch_size": 64},
                    "per-epoch validation AUC on the val split (benchmark/engine/validate.py); null = none",
                    nullable=True, fields={"quality": Choice("c40", "", choices=QUALITIES, nullable=True),
                                           "frames_per_video": Int(None, "", min=1, nullable=True),
                                           "batch_size": Int(64, "", min=1)}),
        "select": Choice("last", "checkpoint a stage ends with / the next starts from (best_val needs train.val)",
                         choices=("last", "best_val")),
        "amp": AMP,
        "channels_last": LAYOUT,
        "deterministic": Bool(True, "deterministic kernels (+ CUBLAS_WORKSPACE_CONFIG on CUDA)"),
        "sync_bn": Bool(True, "multi-process CUDA runs: BatchNorm -> SyncBatchNorm"),
        "num_workers": Int(0, "DataLoader worker processes (items seeded: results do not depend on it)", min=0),
        "pin_memory": PIN,
        "persistent_workers": Bool(False, "keep the DataLoader workers between epochs"),
        "prefetch_factor": PREFETCH,
    },
    "evaluate": {
        "batch_size": Int(64, "evaluation batch size", min=1),
        "seed": Int(0, "seeds the random-JPEG test conditions", min=0),
        "amp": AMP,
        "channels_last": LAYOUT,
        "num_workers": Int(0, "DataLoader workers for the test crops", min=0),
        "pin_memory": PIN,
        "prefetch_factor": PREFETCH,
        "indicator_cache": Str("data/indicator_cache", "VQI/FII scores per test set and condition, reused by "
                               "every method; null = off", nullable=True),
    },
    "cost": {
        "batch_size": Int(2, "images per inference call and per measured training step", min=1),
        "iters": Int(2, "timed inference calls (best one counts), after one warm-up", min=1),
        "settings": List(["default", "paper"], "which cost settings are measured",
                         item=Choice("", "", choices=("default", "paper")), min_len=1, unique=True),
    },
    "metrics": {
        "bootstrap": Int(1000, "replicates of the 95 % AUC CI and of the frame-level paired test; 0 = none",
                         min=0),
        "seed": Int(0, "seeds the bootstrap", min=0),
        "reference_method": Str("dpl", "results/significance.csv: every method is tested against this entry"),
    },
    "report": {
        "title": Str("DPL benchmark on the embedded SynthFF dataset", "title of report.html"),
        "inputs.paper_dir": Str("results/paper", "published tables shown beside the measured ones"),
        "inputs.figure_dir": Str("results/figures", "figures drawn from the metrics"),
        "inputs.plot_dirs": List(["results/plots"], "folders of PNGs (+ .txt captions) made by plot stages",
                                 item=Str("", "")),
        "inputs.cost_csv": Str("results/cost.csv", "cost table rendered when present"),
        "inputs.significance_csv": Str("results/significance.csv", "significance tests rendered when present"),
    },
    "plots": {
        "train_set": Str("ff_c23", "train set id of the models plotted"),
        "quality": Choice("c40", "test split quality the frames come from", choices=QUALITIES),
        "tsne_frames": Int(300, "frames in the t-SNE", min=2),
        "seed": Int(0, "seeds the frame draw", min=0),
    },
    "regression": {
        "tolerance": Float(0.02, "fail when a headline AUC drops by more than this (absolute)", min=0.0, max=1.0),
        "reference": Str("results/reference.json", "the reference the check compares with"),
    },
}

#: the keys of one ``datasets.<id>`` entry (only ``name`` and ``root`` are required)
DATASET_ENTRY = {
    "name": Choice("synthff", "dataset class", choices=_registered(registry.DATASETS)),
    "root": Str("data/raw/synthff", "the dataset folder, relative to the project root"),
    "face_detector": Choice("haar", "face detector used by extract", choices=_registered(registry.FACE_DETECTORS)),
    "faces": Choice("track", "which faces: track (the identity that continues), largest (per frame), all",
                    choices=("track", "largest", "all")),
    "allow_partial": Bool(False, "run on an incomplete tree (the report then says so)"),
    "manipulations": List(None, "manipulation codes it serves", nullable=True, min_len=1, unique=True,
                          item=Choice("", "", choices=_manipulations)),
    "indicator_edges": Str(None, "a test-only dataset: bin its indicator levels with this dataset's edges",
                           nullable=True),
    "split": Choice("test", "the split used (FFIW10K)", choices=SPLITS),
    "quality": Choice("c23", "the quality name a one-quality dataset is filed under", choices=QUALITIES),
    "synthff": Dict(None, "a SynthFF stand-in: keys of `synthff` that differ (seed, pairs, appearance)",
                    nullable=True, fields={"seed": SEED, "frames": Int(16, "", min=1), "size": Int(96, "", min=32)}),
}
REQUIRED_DATASET_KEYS = ("name", "root")
