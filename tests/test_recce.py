"""RECCE: the reconstruction loss sees real faces only; the metric loss on (cos + 1) / 2 at each
level and the flooded classification loss by hand; the model's scales and terms."""
import benchmark  # noqa: F401  (torchvision shim)
import pytest
import torch

from methods._recce_parts import GraphReasoning
from methods.recce import RECCE, flood, metric_loss, real_reconstruction_loss, similarity


def test_reconstruction_loss_ignores_fake_samples():
    recon = torch.zeros(3, 3, 2, 2)
    target = torch.ones(3, 3, 2, 2)
    target[1] = 7.0                               # a fake with a huge error
    label = torch.tensor([0, 1, 0])
    assert real_reconstruction_loss(recon, target, label).item() == pytest.approx(1.0)
    target[1] = -100.0                            # changing the fake changes nothing
    assert real_reconstruction_loss(recon, target, label).item() == pytest.approx(1.0)
    target[2] = 3.0                               # a real's error counts: mean of |1| and |3|
    assert real_reconstruction_loss(recon, target, label).item() == pytest.approx(2.0)


def test_reconstruction_loss_is_zero_without_reals_and_fakes_get_no_gradient():
    recon = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randn(2, 3, 4, 4)
    assert real_reconstruction_loss(recon, target, torch.tensor([1, 1])).item() == 0.0
    real_reconstruction_loss(recon, target, torch.tensor([0, 1])).backward()
    assert recon.grad[0].abs().sum() > 0 and recon.grad[1].abs().sum() == 0


def test_metric_loss_by_hand():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    label = torch.tensor([0, 0, 1])
    # C = (cos + 1) / 2: C01 = 1/2, C02 = 1, C12 = 1/2
    assert torch.allclose(similarity(e), torch.tensor([[1.0, 0.5, 1.0], [0.5, 1.0, 0.5], [1.0, 0.5, 1.0]]))
    # real-real pairs (i != j): 1/2; real-fake pairs (both orders): (1 + 1/2) / 2 = 3/4 -> 1 - 1/2 + 3/4
    assert metric_loss([e], label).item() == pytest.approx(1.25)
    assert metric_loss([e, e], label).item() == pytest.approx(2.5)  # summed over the levels
    tight = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # reals together, the fake opposite
    assert metric_loss([tight], label).item() == pytest.approx(0.0)  # max(0, 1 - 1 + 0)
    assert metric_loss([e], torch.tensor([1, 1, 1])).item() == pytest.approx(1.0)  # no pair: 1 - 0 + 0


def test_flooding_by_hand():
    assert flood(torch.tensor(0.3), 0.04).item() == pytest.approx(0.3)
    low = torch.tensor(0.01, requires_grad=True)
    out = flood(low, 0.04)  # |0.01 - 0.04| + 0.04
    assert out.item() == pytest.approx(0.07)
    out.backward()
    assert low.grad.item() == -1.0  # below the flood level the gradient ascends


def test_graph_reasoning_joins_each_location_to_the_decoder_locations_under_it():
    torch.manual_seed(0)
    gr = GraphReasoning(8, 6, 4, 5).eval()
    a, b, c = torch.rand(2, 8, 2, 2), torch.rand(2, 6, 4, 4), torch.rand(2, 4, 8, 8)
    out = gr(a, b, c)
    assert out.shape == a.shape
    b2 = b.clone()
    b2[:, :, :2, :2] += 1.0  # the stride-8 locations under encoder location (0, 0) only
    diff = (gr(a, b2, c) - out).abs().sum(1)[0]
    assert diff[0, 0] > 0 and diff[0, 1] == diff[1, 0] == diff[1, 1] == 0


def test_the_model_works_at_the_original_scales_and_sums_its_terms():
    torch.manual_seed(0)
    model = RECCE(backbone="test_resnet").eval()  # eval: no dropout, no batch-norm coupling
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(4, 3, 64, 64, generator=g), "label": torch.tensor([0, 1, 0, 1])}
    with torch.no_grad():
        out = model(batch)
        a = model.loss(out, batch)
    assert [lv.shape[1] for lv in out["levels"]] == [192, 64, 32]  # stride-16 encoder, stride-8 and -4 decoder
    assert out["recon"].shape == batch["image"].shape and out["recon"].abs().max() <= 1  # tanh, [-1, 1]
    assert torch.equal(out["target"], 2 * batch["image"] - 1)
    assert a["loss"].item() == pytest.approx((flood(a["bce"], 0.04) + 0.1 * a["rec"] + 0.1 * a["metric"]).item())
    other = {**batch, "image": batch["image"].clone()}
    other["image"][1] = torch.rand(3, 64, 64, generator=g)   # a different fake face
    with torch.no_grad():
        b = model.loss(model(other), other)
    assert a["rec"].item() == pytest.approx(b["rec"].item())  # fakes are not reconstructed
    assert a["bce"].item() != pytest.approx(b["bce"].item())  # but still classified
