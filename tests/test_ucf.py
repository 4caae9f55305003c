"""UCF: the contrastive terms, partners, shuffling and the four-L1 reconstruction by hand; each
loss term responds to its own input."""
import benchmark  # noqa: F401  (torchvision shim)
import pytest
import torch

from methods.ucf import UCF, contrastive_loss, partners, reconstruction_loss, shuffle_within, triplet_terms


def test_triplet_terms_by_hand():
    emb = torch.tensor([[0.0], [1.0], [3.0]])
    label = torch.tensor([0, 0, 1])
    # real anchors: (0, 1, 2): d01 = 1, d02 = 3 -> max(0, 1 - 3 + 3) = 1; (1, 0, 2): 1 - 2 + 3 = 2 -> mean 1.5
    # the fake anchor (2) has no positive: no fake-anchored term
    assert triplet_terms(emb, label, label, label, 3.0).item() == pytest.approx(1.5)
    assert triplet_terms(emb, label, label, label, 1.0).item() == pytest.approx(0.0)
    emb4, label4 = torch.tensor([[0.0], [1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1, 1])
    # real anchors: (0,1,2) 1-3+3 = 1, (0,1,3) 1-5+3 -> 0, (1,0,2) 1-2+3 = 2, (1,0,3) 1-4+3 = 0 -> mean 0.75
    # fake: (2,3,0) 2-3+3 = 2, (2,3,1) 2-2+3 = 3, (3,2,0) 2-5+3 = 0, (3,2,1) 2-4+3 = 1 -> mean 1.5
    assert triplet_terms(emb4, label4, label4, label4, 3.0).item() == pytest.approx(0.75 + 1.5)


def test_contrastive_loss_is_common_by_label_plus_specific_by_manipulation():
    common = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    specific = torch.tensor([[0.0], [4.0], [1.0], [1.0]])
    label, manipulation = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 2, 3])
    # specific: positives share the manipulation (reals 0-1; the fakes 2 and 3 differ: no positive),
    # negatives the other label: (0,1,n): d01 = 4 - d0n(1, 1) + 3 = 6; (1,0,n): 4 - 3 + 3 = 4 -> mean 5
    want = triplet_terms(common, label, label, label, 3.0) + 5.0
    assert contrastive_loss(common, specific, label, manipulation, 3.0).item() == pytest.approx(want.item())


def test_partners_are_of_the_other_label_and_shuffling_keeps_labels():
    label = torch.tensor([0, 1, 1, 0, 1])
    # reals 0, 3 -> fakes 1, 2; fakes 1, 2, 4 -> reals 0, 3, 0 (rank 2 mod 2)
    assert partners(label).tolist() == [1, 0, 3, 2, 0]
    assert partners(torch.tensor([1, 1])).tolist() == [0, 1]
    torch.manual_seed(0)
    perm = shuffle_within(label)
    assert sorted(perm.tolist()) == list(range(5)) and torch.equal(label[perm], label)


def test_reconstruction_loss_is_four_l1_terms_by_hand():
    label = torch.tensor([0, 1, 1])
    target = torch.zeros(3, 1, 1, 1)
    out = {"target": target, "recon_self": torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1),
           "recon_cross": torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1, 1)}
    # real self 1 + real cross 8 + fake self (2 + 4) / 2 + fake cross (16 + 32) / 2
    assert reconstruction_loss(out, label).item() == pytest.approx(1 + 8 + 3 + 24)
    assert reconstruction_loss(out, torch.tensor([1, 1, 1])).item() == pytest.approx(7 / 3)  # no cross term


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

    relabelled = {**batch, "manipulation": torch.tensor([0, 2, 1, 0, 3, 4])}
    assert _changed(base, _terms(model, out, relabelled)) == {"spe", "con"}

    assert _changed(base, _terms(model, {**out, "logit_spe": out["logit_spe"] + torch.eye(*out["logit_spe"].shape)}, batch)) == {"spe"}
    assert _changed(base, _terms(model, {**out, "specific": out["specific"] * 0.1}, batch)) == {"con"}
    assert _changed(base, _terms(model, {**out, "common": out["common"] * 0.1}, batch)) == {"con"}
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
    assert set(ev) == {"logit", "logit_spe", "specific", "common", "feature"}  # inference: forgery branch only
    assert _terms(model, ev, {k: v for k, v in batch.items() if k != "manipulation"}).keys() == {"loss", "sha"}
