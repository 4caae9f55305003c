"""UCF: each loss term responds to its own input (and only to it); the triplet loss by hand."""
import benchmark  # noqa: F401  (torchvision shim)
import pytest
import torch

from methods.ucf import UCF, triplet_loss


def test_triplet_loss_by_hand():
    emb = torch.tensor([[0.0], [1.0], [3.0]])
    cls = torch.tensor([0, 0, 1])
    # triplets (a, p, n): (0, 1, 2): d(0,1)=1, d(0,2)=3 -> max(0, 1-3+m); (1, 0, 2): 1 - 2 + m
    assert triplet_loss(emb, cls, 3.0).item() == pytest.approx(((1 - 3 + 3) + (1 - 2 + 3)) / 2)
    assert triplet_loss(emb, cls, 1.0).item() == pytest.approx((0 + 0) / 2)
    assert triplet_loss(emb, torch.tensor([0, 1, 2]), 3.0).item() == 0.0  # no positive pair


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = UCF(backbone="test_efficientnet", feat_dim=16, content_stride=8).train()
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(6, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 1, 0, 1, 1]),
             "manipulation": torch.tensor([0, 1, 2, 0, 1, 2])}
    torch.manual_seed(1)
    out = {k: v.detach() for k, v in model(batch).items()}
    return model, batch, out


def _terms(model, out, batch):
    return {k: v.item() for k, v in model.loss(out, batch).items()}


def _changed(a, b):
    return {k for k in a if k != "loss" and a[k] != pytest.approx(b[k], abs=1e-7)}


def test_each_term_changes_with_its_own_input(setup):
    model, batch, out = setup
    base = _terms(model, out, batch)
    assert set(base) == {"loss", "sha", "spe", "con", "rec"}
    w = {"sha": 1.0, "spe": 0.1, "rec": 0.3, "con": 0.05}
    assert base["loss"] == pytest.approx(sum(w[k] * base[k] for k in w))

    flipped = {**batch, "label": 1 - batch["label"]}
    assert _changed(base, _terms(model, out, flipped)) == {"sha"}

    relabelled = {**batch, "manipulation": torch.tensor([0, 2, 1, 0, 3, 4])}
    assert _changed(base, _terms(model, out, relabelled)) == {"spe", "con"}

    assert _changed(base, _terms(model, {**out, "logit_spe": out["logit_spe"] + torch.eye(*out["logit_spe"].shape)}, batch)) == {"spe"}
    assert _changed(base, _terms(model, {**out, "specific": out["specific"] * 0.1}, batch)) == {"con"}
    assert _changed(base, _terms(model, {**out, "logit": out["logit"] + 1.0}, batch)) == {"sha"}
    assert _changed(base, _terms(model, {**out, "recon_self": out["recon_self"] + 0.5}, batch)) == {"rec"}
    assert _changed(base, _terms(model, {**out, "recon_cross": out["recon_cross"] + 0.5}, batch)) == {"rec"}


def test_reconstructions_depend_on_content_and_on_the_partners_forgery_features(setup):
    model, batch, out = setup
    assert out["recon_self"].shape == out["target"].shape == batch["image"].shape
    assert not torch.allclose(out["recon_self"], out["recon_cross"])  # a partner's style differs
    model.eval()
    with torch.no_grad():
        ev = model(batch)
    model.train()
    assert set(ev) == {"logit", "logit_spe", "specific"}  # inference: forgery branch only
    assert _terms(model, ev, {k: v for k, v in batch.items() if k != "manipulation"}).keys() == {"loss", "sha"}
