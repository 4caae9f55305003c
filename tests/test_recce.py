"""RECCE: the reconstruction loss sees real faces only; the metric loss by hand; the model's terms."""
import benchmark  # noqa: F401  (torchvision shim)
import pytest
import torch

from methods.recce import RECCE, metric_loss, real_reconstruction_loss


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
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    label = torch.tensor([0, 0, 1, 1])
    # real-real: cos(e0, e1) = 0 -> pull = 1 - 0 = 1 (both ordered pairs)
    # real-fake: cos(e0,e2)=1, cos(e0,e3)=1/sqrt2, cos(e1,e2)=0, cos(e1,e3)=1/sqrt2 -> push = mean
    push = (1 + 2 * 2 ** -0.5 + 0) / 4
    assert metric_loss(e, label).item() == pytest.approx(1.0 + push)
    assert metric_loss(e, label, margin=0.9).item() == pytest.approx(1.0 + (1 - 0.9) / 4)


def test_fake_images_do_not_change_the_reconstruction_term():
    torch.manual_seed(0)
    model = RECCE(backbone="test_resnet").eval()  # eval: no batch-norm coupling between samples
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(4, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 0, 1])}
    with torch.no_grad():
        a = model.loss(model(batch), batch)
        other = {**batch, "image": batch["image"].clone()}
        other["image"][1] = torch.rand(3, 32, 32, generator=g)   # a different fake face
        b = model.loss(model(other), other)
        other["image"][0] = torch.rand(3, 32, 32, generator=g)   # a different real face
        c = model.loss(model(other), other)
    assert a["rec"].item() == pytest.approx(b["rec"].item())
    assert c["rec"].item() != pytest.approx(a["rec"].item())
    assert a["bce"].item() != pytest.approx(b["bce"].item())  # the fake is still classified
    assert a["loss"].item() == pytest.approx((a["bce"] + 0.1 * a["rec"] + 0.1 * a["metric"]).item())
