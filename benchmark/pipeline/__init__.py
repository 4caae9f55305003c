"""The pipeline: the stages of DESIGN §3 as library functions (``stages``), the graph they form
(``graph``: where outputs live, what each stage reads, its key), the up-to-date stamps
(``stamps``) and where a table came from (``provenance``). The CLI and DVC call the stage
functions re-exported here; the libraries below (data, indicators, engine, evaluation, report)
never import this package."""
from benchmark.pipeline.graph import (  # noqa: F401
    dataset_cfg, dataset_class, distorted_name, faces_dir, in_order, indicators_json, method_variants,
    model_dir, outputs, parse_train_set, protocol_methods, protocol_train_sets, resolve_method,
    scores_path, stage_key, test_sets, train_set_id, upstream)
from benchmark.pipeline.inputs import pair_manifest as _pair_manifest  # noqa: F401
from benchmark.pipeline.stages import (  # noqa: F401
    STAGE_FUNCTIONS, analyze, build_method, cost, distort, evaluate, extract, frames_subset,
    indicators, plots, report, run, run_grid, synthesize, train, train_rows)
