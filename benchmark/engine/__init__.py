"""Training on mmengine's Runner (``train``), the pieces it is assembled from, and loading a
trained model (``load_trained``). Submodules: ``train`` (stages and Runners), ``model`` (a
Method as an mmengine model), ``optim`` (recipes, optimiser wrappers), ``loaders``,
``hooks``, ``checkpoint``."""
from benchmark.engine.checkpoint import PlainCheckpointHook, load_trained, method_state  # noqa: F401
from benchmark.engine.hooks import EpochSeedHook, HistoryHook, ProgressHook  # noqa: F401
from benchmark.engine.model import LevelsPreprocessor, MethodModel  # noqa: F401
from benchmark.engine.train import history, run_stages, stage_dirs, train  # noqa: F401
