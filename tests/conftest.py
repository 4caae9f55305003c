"""Suite-wide settings: tests use tiny tensors, where threads only add overhead
(and OpenMP spin-waits slow a shared 2-core machine down many times over)."""
import torch

import benchmark  # noqa: F401  (torchvision shim before timm/open_clip/mmengine)

torch.set_num_threads(1)
