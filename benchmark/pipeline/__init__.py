"""The pipeline: the one declaration of the stages (``graph``, from what params and protocols ask
for, ``specs``, and the code each stage runs, ``code``), ``dvc.yaml`` rendered from it
(``dvcfile``), the stage functions the CLI verbs call (``stages``, ``reporting``), ``run`` and
``jobs`` over DVC's view of what is stale (``executor``, ``locks``), stage fingerprints
(``fingerprint``) and where a table came from (``provenance``). Only the CLI imports this
package; the libraries (data, indicators, engine, evaluation, report) never do."""
from benchmark.data.selection import frames_subset, train_rows  # noqa: F401
from benchmark.pipeline.executor import job_lines, run  # noqa: F401
from benchmark.pipeline.specs import (  # noqa: F401
    analysis_dir, base_chain, dataset_cfg, dataset_class, distorted_name, faces_dir, indicators_json,
    method_variants, model_dir, parse_train_set, protocol_methods, protocol_train_sets, resolve_method,
    scores_path, test_sets, train_cfg, train_set_id)
from benchmark.pipeline.stages import (  # noqa: F401
    STAGE_FUNCTIONS, analyze, build_method, cost, distort, evaluate, extract, indicators, metrics, plots, report,
    stage_key, synthesize, train)
