"""Training on mmengine's Runner (``train``), the pieces it is assembled from, and loading a
trained model (``load_trained``). Submodules: ``train`` (stages and Runners), ``model`` (a
Method as an mmengine model), ``optim`` (recipes, optimiser wrappers), ``loaders``,
``hooks``, ``guards`` (stopping a diverging training), ``checkpoint``."""
from benchmark.engine.checkpoint import PlainCheckpointHook, load_state, load_trained, method_state  # noqa: F401
from benchmark.engine.guards import Diverged, DivergenceGuard  # noqa: F401
from benchmark.engine.hooks import EpochSeedHook, HistoryHook, ProgressHook  # noqa: F401
from benchmark.engine.model import LevelsPreprocessor, MethodModel  # noqa: F401
from benchmark.engine.train import completed, history, partial_dir, run_stages, stage_dirs, train  # noqa: F401
