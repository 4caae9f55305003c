"""Suite-wide settings: tests use tiny tensors, where threads only add overhead
(and OpenMP spin-waits slow a shared 2-core machine down many times over); modules marked
``long`` are collected first, so that under ``make test`` (pytest-xdist, whole modules per
worker) the longest one starts at once and the other modules fill the other workers beside it."""
import torch

import benchmark  # noqa: F401  (torchvision shim before timm/open_clip/mmengine)

torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("long") is None)   # stable: file order otherwise
