"""DPL benchmark harness: data, indicators, engine, evaluation and reports."""
from benchmark import _tv_shim

_tv_shim.install()  # before anything imports torchvision (timm, open_clip, mmengine)

__version__ = "0.1.0"
