"""benchmarks/grid_projection.py: a training's missing epochs at its stages' measured cost, and the
executor's order simulated at ``jobs`` stages at a time; values computed by hand."""
import importlib.util
from pathlib import Path

import pytest

from benchmark import config, registry
from benchmark.pipeline import dag

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("grid_projection", ROOT / "benchmarks" / "grid_projection.py")
gp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gp)


@pytest.mark.parametrize("record, wanted, seconds", [
    # one stage: 1 epoch of 30 s run, 10 wanted -> 9 more at 30 s
    ({"epochs": 1, "seconds": 30.0}, {"train": 10}, 270.0),
    # two stages run 2 + 1 epochs (100 s, 40 s), 10 + 5 wanted: 8 * 50 + 4 * 40
    ({"epochs": 3, "seconds": 140.0, "stages": [{"stage": "I", "epochs": 2, "seconds": 100.0},
                                                {"stage": "II", "epochs": 1, "seconds": 40.0}]},
     {"I": 10, "II": 5}, 560.0),
    # stage I adopted from the base's training: only stage II's epochs count
    ({"epochs": 2, "seconds": 40.0, "stages": [{"stage": "I", "epochs": 1, "seconds": 0.0, "adopted_from": "x"},
                                               {"stage": "II", "epochs": 1, "seconds": 40.0}]},
     {"I": 10, "II": 5}, 160.0),
    # a whole training taken from another: it trains nothing
    ({"epochs": 1, "seconds": 30.0, "reused_from": "models/ff_c23/dpl/seed0"}, {"train": 10}, 0.0),
])
def test_added_seconds_is_the_missing_epochs_at_each_trained_stages_cost(record, wanted, seconds):
    assert gp.added_seconds(record, wanted) == pytest.approx(seconds)


def _inst(name, deps, outs):
    return dag.Instance(name=name, stage=None, seed=None, deps=deps, outs=outs)


@pytest.mark.parametrize("jobs, span", [(1, 27.0), (2, 15.0), (3, 15.0)])
def test_simulate_starts_each_stage_when_its_upstream_is_done_and_a_slot_is_free(jobs, span):
    # a (10 s) -> b (5 s); c (12 s) alone. Two slots: a and c at 0, b at 10, done at 15.
    insts = [_inst("a", [], ["x"]), _inst("b", ["x"], ["y"]), _inst("c", [], ["z"])]
    assert gp.simulate(insts, {"a": 10.0, "b": 5.0, "c": 12.0}, jobs) == span


def test_simulate_runs_the_stages_in_the_executors_wave_order():
    # two slots; a (10 s) -> b (1 s); c (12 s), d (12 s) alone. Wave order a, c, d | b: a and c at 0,
    # d when a ends (10), b when c ends (12): done at 22. In declaration order (a, b, c, d) b would
    # take a's slot at 10 and d start at 11: 23.
    insts = [_inst("a", [], ["x"]), _inst("b", ["x"], ["y"]), _inst("c", [], ["z"]), _inst("d", [], ["w"])]
    assert gp.simulate(insts, {"a": 10.0, "b": 1.0, "c": 12.0, "d": 12.0}, 2) == 22.0


def test_wanted_epochs_are_each_methods_own_training_stages():
    registry.load_all()
    params = config.load_params(root=ROOT)
    epochs, stage2 = params["train"]["epochs"], params["methods"]["dpl"]["stage2_epochs"]
    assert gp.wanted_epochs(params, "baseline") == {"train": epochs}
    assert gp.wanted_epochs(params, "dpl") == {"I": epochs, "II": stage2}
    assert gp.wanted_epochs(params, "dpl_wo_stage2") == {"I": epochs}  # a variant: its own options
