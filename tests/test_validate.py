"""The engine's validation loop (per-epoch val AUC, history, best checkpoint), train.select,
the per-stage starting checkpoint, and the all-JPEG-versions batch composition."""
import numpy as np
import pandas as pd
import pytest
import torch

from benchmark import engine, io
from benchmark.data.frames import TrainFrames
from benchmark.data.jpeg import JPEG_RANGES, jpeg
from benchmark.data.views import JPEGViews, compose
from benchmark.engine.model import flatten_views
from benchmark.engine.validate import AUCMetric, best_checkpoint
from benchmark.errors import UserError
from test_engine import Tiny, frames, levels  # noqa: F401  (frames is a fixture)
from test_engine_stages import TwoStage

CFG = {"batch_size": 4, "optimizer": {"type": "Adam", "lr": 0.01}, "val": {"batch_size": 5}}


def _train(frames, work, method=None, val=True, val_rows=None, **cfg):
    torch.manual_seed(0)
    method = method or Tiny()
    ds = TrainFrames(frames[0], frames[1], seed=0)
    vd = TrainFrames(frames[0] if val_rows is None else val_rows, frames[1], seed=0) if val else None
    summary = engine.train(method, ds, work, {**CFG, "epochs": 3, **cfg}, seed=0, levels=levels,
                           fingerprint="fp", val_data=vd)
    return method, summary


def test_auc_metric_by_hand():
    m = AUCMetric()
    # labels 0 1 0 1 1, scores .1 .4 .35 .8 .2: pairs (fake > real) 1:(.4>.1,.4>.35) 2 of 2,
    # .8: 2 of 2, .2: 1 of 2 -> 5 of 6
    m.process({"label": torch.tensor([0, 1, 0])}, torch.tensor([0.1, 0.4, 0.35]))
    m.process({"label": torch.tensor([1, 1])}, torch.tensor([0.8, 0.2]))
    assert m.compute_metrics(m.results) == {"auc": pytest.approx(5 / 6)}
    assert np.isnan(AUCMetric().compute_metrics([(0, 0.3), (0, 0.4)])["auc"])  # one class: undefined


def test_validation_is_logged_per_epoch_and_changes_no_weight(frames, tmp_path):
    with_val, _ = _train(frames, tmp_path / "v")
    without, _ = _train(frames, tmp_path / "n", val=False)
    assert all(torch.equal(a, b) for a, b in zip(with_val.state_dict().values(), without.state_dict().values()))
    hist = pd.read_csv(tmp_path / "v" / "history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3] and hist["val_auc"].between(0, 1).all()
    assert "val_auc" not in pd.read_csv(tmp_path / "n" / "history.csv")
    best = int(hist["val_auc"].idxmax()) + 1  # the first epoch with the highest AUC
    assert best_checkpoint(tmp_path / "v").name == f"best_auc_epoch_{best}.pth"


def test_select_best_val_ends_with_the_best_epoch(frames, tmp_path):
    method, _ = _train(frames, tmp_path / "b", select="best_val")
    best = best_checkpoint(tmp_path / "b")
    state = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(state[f"method.{k}"], v) for k, v in method.state_dict().items())
    assert all(torch.equal(v, io.load_tensors(tmp_path / "b" / "model.pt")[k]) for k, v in method.state_dict().items())
    last, _ = _train(frames, tmp_path / "l")
    epoch = int(best.stem.rsplit("_", 1)[1])
    assert (epoch == 3) == all(torch.equal(a, b) for a, b in zip(method.state_dict().values(),
                                                                  last.state_dict().values()))


def test_a_later_stage_starts_from_the_best_validation_epoch(frames, tmp_path):
    method, summary = _train(frames, tmp_path / "w", method=TwoStage("best_val"))
    best = best_checkpoint(tmp_path / "w" / "a")
    assert summary["stages"][1]["started_from"] == best.name
    state = torch.load(best, weights_only=True)["state_dict"]
    assert torch.equal(method.conv.weight, state["method.conv.weight"])  # frozen in stage b


def test_best_val_without_validation_is_refused_before_training(frames, tmp_path):
    with pytest.raises(UserError, match="needs validation"):
        _train(frames, tmp_path / "x", val=False, select="best_val")
    with pytest.raises(UserError, match="needs validation"):
        _train(frames, tmp_path / "y", method=TwoStage("best_val"), val=False)
    with pytest.raises(UserError, match="train.select='best'"):
        _train(frames, tmp_path / "z", select="best")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_all_jpeg_views_are_the_image_and_one_draw_per_range(frames):
    base = TrainFrames(frames[0], frames[1], seed=3)
    views = compose(base, "all_jpeg")
    assert isinstance(views, JPEGViews) and compose(base, "single") is base
    item = views[5]
    assert item["image"].shape == (4, 3, 16, 16) and item["label"] == base[5]["label"]
    assert torch.equal(item["image"][0], base[5]["image"])
    qs = views.qualities(5)
    assert all(lo <= q <= hi for q, (lo, hi) in zip(qs, JPEG_RANGES))
    for v, q in zip(item["image"][1:], qs):
        assert torch.equal(v, jpeg(base[5]["image"], q))
    assert views.qualities(5) == qs  # seeded by (seed, epoch, index)
    views.epoch = 1
    assert base.epoch == 1 and [views.qualities(i) for i in range(12)] != [qs] * 12
    with pytest.raises(UserError, match="train.views"):
        compose(base, "both")


def test_views_are_flattened_into_the_batch():
    data = {"image": torch.arange(2 * 4 * 3).view(2, 4, 3, 1, 1), "label": torch.tensor([1, 0]), "epoch": 7}
    out = flatten_views(data)
    assert out["image"].shape == (8, 3, 1, 1) and out["label"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert torch.equal(out["image"][4], data["image"][1, 0]) and out["epoch"] == 7
    assert flatten_views({"image": torch.zeros(2, 3, 1, 1)})["image"].shape == (2, 3, 1, 1)


def test_training_on_all_jpeg_views_sees_four_crops_per_image(frames, tmp_path):
    seen = []

    class Spy(Tiny):
        def forward(self, batch):
            seen.append(batch["image"].shape[0])
            return super().forward(batch)

    torch.manual_seed(0)
    ds = JPEGViews(TrainFrames(frames[0], frames[1], seed=0))
    engine.train(Spy(), ds, tmp_path / "w", {**CFG, "epochs": 1, "val": None}, seed=0, levels=levels)
    assert seen == [16, 16, 16]  # 12 images, batch 4 -> 3 steps of 4 x 4 views


def test_the_engine_tells_the_method_each_epoch(frames, tmp_path):
    class Counting(Tiny):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    method, _ = _train(frames, tmp_path / "w", method=Counting(), val=False)
    assert method.epochs == [0, 1, 2]


def _best(work):
    best = best_checkpoint(work)
    return best.name, torch.load(best, weights_only=True)["state_dict"]


@pytest.mark.parametrize("kill", ["in_training", "in_validation"])
def test_a_resumed_stage_keeps_the_best_epoch_of_the_uninterrupted_run(frames, tmp_path, monkeypatch, kill):
    """Killed in epoch 3 (after epoch 2's checkpoint, validation and best file) or during epoch
    2's validation (after its checkpoint): the rerun validates epoch 2 again from its checkpoint
    and ends with the same history, the same single best file, the same model."""
    from benchmark.engine import validate
    from test_engine import Interrupt, Stopping
    rows = frames[0].copy()  # labels scrambled (seeded): an AUC that moves from epoch to epoch
    rows["label"] = np.random.default_rng(3).permutation(rows["label"].to_numpy())
    straight, _ = _train(frames, tmp_path / "s", val_rows=rows)
    want_hist = pd.read_csv(tmp_path / "s" / "history.csv")
    torch.manual_seed(0)  # the same initial weights as the uninterrupted run's
    if kill == "in_training":
        method = Stopping(stop_at=8)  # 3 steps an epoch: the 2nd of epoch 3
    else:
        method, calls, real = Tiny(), [], validate.AUCMetric.compute_metrics

        def dies_second(self, results):
            calls.append(1)
            if len(calls) == 2:
                raise Interrupt
            return real(self, results)
        monkeypatch.setattr(validate.AUCMetric, "compute_metrics", dies_second)
    with pytest.raises(Interrupt):
        _train(frames, tmp_path / "r", method=method, val_rows=rows)
    monkeypatch.undo()
    partial = engine.partial_dir(tmp_path / "r", "fp")
    assert (partial / "epoch_2.pth").is_file()
    resumed, summary = _train(frames, tmp_path / "r", val_rows=rows)
    assert summary["iters"] == 9 and len(list((tmp_path / "r").glob("best_auc_epoch_*.pth"))) == 1
    got_hist = pd.read_csv(tmp_path / "r" / "history.csv")
    assert got_hist["val_auc"].tolist() == want_hist["val_auc"].tolist()
    (want_name, want_state), (got_name, got_state) = _best(tmp_path / "s"), _best(tmp_path / "r")
    assert got_name == want_name and all(torch.equal(want_state[k], got_state[k]) for k in want_state)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
