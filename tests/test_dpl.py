"""DPL stage I: hand-computed losses, the FSM update, and the structural properties."""
from __future__ import annotations

import math

import benchmark  # noqa: F401  (installs the torchvision shim before timm imports)
import pytest
import torch

from benchmark.errors import UserError
from methods._losses import (binary_entropy_with_logits, entropy_regulariser, focal_bce_with_logits,
                             hard_sample_mask, lreg_step_mask)
from methods.dpl import DPL, fsm_step, gap, window_mask

DEFAULTS = dict(backbone="convnext_atto", pretrained=None, k=5, hidden=32, delta_frac=1 / 3,
                focal_gamma=2.0, lreg_weight=1.0, lreg_sign=1.0, lreg_steps="all_up_to_last",
                fusion="add", use_vqpl=True, use_fipl=True, fsm_recursive=True)
LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75




def dpl(seed=0, **kw):
    torch.manual_seed(seed)
    return DPL(**{**DEFAULTS, **kw})


def batch(vqi, fii, n_img=None, seed=0):
    n = len(vqi)
    img = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return {"image": img, "label": torch.arange(n) % 2,
            "vqi_level": torch.tensor(vqi), "fii_level": torch.tensor(fii)}


# -- losses -------------------------------------------------------------------------------
def test_focal_loss_matches_hand_computation():
    # FL = (1 - p_t)^2 * (-ln p_t), p_t = P(true class):
    #  z=0,  y=1: p_t = 0.5                      -> 0.25     * 0.693147 = 0.173287
    #  z=2,  y=0: p_t = 1 - sigmoid(2) = 0.119203 -> 0.880797^2 * 2.126928 = 1.650078
    #  z=-1, y=0: p_t = 1 - sigmoid(-1) = 0.731059 -> 0.268941^2 * 0.313262 = 0.022658
    # mean = (0.173287 + 1.650078 + 0.022658) / 3 = 0.615341
    z, y = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1, 0, 0])
    assert focal_bce_with_logits(z, y, gamma=2.0).item() == pytest.approx(0.615341, abs=1e-5)
    # gamma = 0 is plain cross-entropy: (0.693147 + 2.126928 + 0.313262) / 3 = 1.044446
    assert focal_bce_with_logits(z, y, gamma=0.0).item() == pytest.approx(1.044446, abs=1e-5)


def test_entropy_regulariser_matches_hand_computation():
    # H(0.5) = ln 2 = 0.693147; H(0.75) = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335
    assert binary_entropy_with_logits(torch.tensor([0.0, LN3])).tolist() == pytest.approx([0.693147, 0.562335], abs=1e-6)
    step_logits = torch.tensor([[0.0, LN3, 5.0], [0.0, 0.0, 0.0], [LN3, -3.0, 9.0]])
    last = torch.tensor([2, 3, 1])
    hard = torch.tensor([1.0, 0.0, 1.0])
    steps = lreg_step_mask(last, 3, "all_up_to_last")
    # sample 0: mean(H(.5), H(.75)) = 0.627741; sample 1 is easy -> 0; sample 2: H(.75) = 0.562335
    # (0.627741 + 0 + 0.562335) / N=3 = 0.396692
    assert entropy_regulariser(step_logits, steps, hard).item() == pytest.approx(0.396692, abs=1e-6)


def test_hard_samples_are_those_with_cross_entropy_above_ln2():
    # CE = softplus(z) for a real (y=0), softplus(-z) for a fake; ln 2 = 0.693147:
    #  z=0.3,y=0: 0.854355 > ln2 -> hard;  z=-0.2,y=0: 0.598139 -> easy;  z=0,y=0: exactly ln 2 -> easy;
    #  z=-4,y=1: 4.018150 -> hard;  z=0.01,y=1: 0.688159 -> easy;  z=-0.01,y=1: 0.698159 -> hard
    z, y = torch.tensor([0.3, -0.2, 0.0, -4.0, 0.01, -0.01]), torch.tensor([0, 0, 0, 1, 1, 1])
    assert hard_sample_mask(z, y).tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]


def test_lreg_steps_select_the_tab8_steps():
    last = torch.tensor([2, 3, 1])
    assert lreg_step_mask(last, 3, "first").tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert lreg_step_mask(last, 3, "last").tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    assert lreg_step_mask(last, 3, "all_up_to_last").tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]
    with pytest.raises(UserError, match="first, last, all_up_to_last"):
        lreg_step_mask(last, 3, "middle")


@pytest.mark.parametrize("mode,expected", [
    # the hand example above with k=3, both samples hard (final logits 0.5 and LN3 vs labels 0, 0)
    ("first", (0.693147 + 0.693147) / 2),            # step 1 of each: H(.5), H(.5)
    ("last", (0.562335 + 0.562335) / 2),             # step 2 of sample 0, step 3 of sample 1
    ("all_up_to_last", (0.627741 + (0.693147 * 2 + 0.562335) / 3) / 2),
])
def test_dpl_loss_applies_lreg_at_the_selected_steps_and_sign(mode, expected):
    out = {"logit": torch.tensor([0.5, LN3]), "last_step": torch.tensor([2, 3]),
           "step_logits": torch.tensor([[0.0, LN3, 7.0], [0.0, 0.0, LN3]])}
    b = {"label": torch.tensor([0, 0])}
    plus = dpl(k=3, lreg_steps=mode, lreg_weight=0.5).loss(out, b)
    minus = dpl(k=3, lreg_steps=mode, lreg_weight=0.5, lreg_sign=-1.0).loss(out, b)
    assert plus["lreg"].item() == pytest.approx(expected, abs=1e-5)
    assert minus["lreg"].item() == pytest.approx(-expected, abs=1e-5)
    assert plus["loss"].item() == pytest.approx(plus["focal"].item() + 0.5 * expected, abs=1e-5)
    assert minus["loss"].item() == pytest.approx(plus["focal"].item() - 0.5 * expected, abs=1e-5)


# -- FSM ----------------------------------------------------------------------------------
def test_window_mask():
    assert window_mask(torch.tensor([1, 4]), 6, 2).tolist() == [[1, 0, 0, 1, 1, 1], [1, 1, 1, 1, 0, 0]]


@pytest.mark.parametrize("recursive", [True, False])
def test_fsm_update_matches_hand_computation(recursive):
    # c=6, h=w=2, channel i holds [[i, i+1], [i+2, i+3]] (mean i + 1.5); delta = 2.
    f1 = torch.stack([torch.tensor([[i, i + 1.0], [i + 2.0, i + 3.0]]) for i in range(6)]).unsqueeze(0)
    centred = torch.tensor([[-1.5, -0.5], [0.5, 1.5]])
    # step 1, l_1 = 1: window {1, 2} kept, the other channels lose their mean (both modes).
    f2 = fsm_step(f1, f1, window_mask(torch.tensor([1]), 6, 2), recursive)
    want2 = torch.stack([centred, f1[0, 1], f1[0, 2], centred, centred, centred])
    assert torch.equal(f2[0], want2)
    # step 2, l_2 = 2: window {2, 3}.
    f3 = fsm_step(f2, f1, window_mask(torch.tensor([2]), 6, 2), recursive)
    if recursive:  # f_3 = f_2 - M_2 avgpool(f_2): channel 1 now loses its mean 2.5, channel 3 is f_2's (centred)
        want3 = torch.stack([centred, centred, f1[0, 2], centred, centred, centred])
        pooled = [0, 0, 3.5, 0, 0, 0]  # only the intersection {2} of the two windows survives
    else:  # f_3 = f_1 - M_2 avgpool(f_1)
        want3 = torch.stack([centred, centred, f1[0, 2], f1[0, 3], centred, centred])
        pooled = [0, 0, 3.5, 4.5, 0, 0]
    assert torch.equal(f3[0], want3)
    assert gap(f3)[0].tolist() == pooled


@pytest.mark.parametrize("recursive", [True, False])
def test_fsm_on_pooled_features_equals_pooling_the_spatial_fsm(recursive):
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(3, 12, 4, 4, generator=g)
    spatial, pooled = f1, gap(f1)
    for _ in range(4):
        m = window_mask(torch.randint(0, 9, (3,), generator=g), 12, 4)
        spatial, pooled = fsm_step(spatial, f1, m, recursive), fsm_step(pooled, gap(f1), m, recursive)
    torch.testing.assert_close(gap(spatial), pooled, atol=1e-6, rtol=0)


# -- structure ----------------------------------------------------------------------------
def test_outputs_steps_and_eval_determinism():
    model = dpl().eval()
    b = batch([2, 5, 1], [1, 3, 1])
    with torch.no_grad():
        o1, o2 = model(b), model(b)
    assert o1["step_logits"].shape == (3, 5) and o1["positions"].shape == (3, 4)
    assert o1["step_valid"].tolist() == [[True, True, False, False, False], [True] * 5, [True] + [False] * 4]
    torch.testing.assert_close(o1["logit"], o1["step_logits"][torch.arange(3), o1["last_step"] - 1])
    assert torch.equal(o1["logit"], o2["logit"])  # eval: fixed positions
    assert 0 <= o1["positions"].min() and o1["positions"].max() <= model.channels - model.delta
    model.train()
    p = model(batch([5] * 16, [5] * 16))["positions"]
    assert len(set(p[:, 0].tolist())) > 1  # training: positions drawn per sample


def test_level2_sample_is_untouched_by_later_steps(monkeypatch):
    model = dpl().eval()
    alone, mixed = batch([2], [2]), batch([2, 5], [2, 5])
    mixed["image"][0] = alone["image"][0]
    with torch.no_grad():
        ref = model(mixed)  # batch composition only changes float rounding in the backbone:
        torch.testing.assert_close(ref["step_logits"][0], model(alone)["step_logits"][0], atol=1e-5, rtol=0)

        class Poisoned(torch.nn.Module):  # a GRU whose steps 3.. return NaN
            def __init__(self, gru):
                super().__init__()
                self.gru, self.calls = gru, 0

            def forward(self, x, h):
                self.calls += 1
                out = self.gru(x, h)
                return out if self.calls <= 2 else torch.full_like(out, float("nan"))

        monkeypatch.setattr(model, "gru_vq", Poisoned(model.gru_vq))
        monkeypatch.setattr(model, "gru_fi", Poisoned(model.gru_fi))
        out = model(mixed)
    assert torch.equal(out["step_logits"][0], ref["step_logits"][0])
    assert torch.isnan(out["logit"][1])  # the level-5 sample did see the perturbed steps


def test_level2_sample_ignores_the_masks_of_later_steps(monkeypatch):
    model = dpl().eval()
    b = batch([2, 5], [1, 5])

    def run(starts):
        def fixed(pooled, state):  # a position sampler returning l_1..l_4 = starts
            state = 0 if state is None else state
            start = torch.full((pooled.shape[0],), starts[state])
            return start, state + 1, start.float()
        monkeypatch.setattr(model.positions, "forward", fixed)
        monkeypatch.setattr(model.positions, "init_state", lambda pooled: None)
        with torch.no_grad():
            return model(b)["logit"]

    a, c = run([10, 0, 0, 0]), run([10, 200, 100, 50])  # l_2..l_4 shape f_3..f_5 only
    assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


# -- ablations and options ----------------------------------------------------------------
def test_without_vqpl_p1_is_gone_and_the_output_changes():
    full, ablated = dpl(seed=0).eval(), dpl(seed=0, use_vqpl=False).eval()
    missing, unexpected = ablated.load_state_dict(full.state_dict(), strict=False)
    assert not missing and unexpected and all(n.startswith(("gru_vq.", "proj_vq.")) for n in unexpected)
    assert not any(n.startswith("gru_vq") for n, _ in ablated.named_parameters())
    b = batch([1, 4], [2, 3])
    with torch.no_grad():
        assert not torch.allclose(full(b)["logit"], ablated(b)["logit"])
        b2 = {**b, "vqi_level": torch.tensor([5, 2])}  # VQI levels only drive P1
        assert not torch.allclose(full(b)["logit"], full(b2)["logit"])
        assert torch.equal(ablated(b)["logit"], ablated(b2)["logit"])
    ablated.train()
    ablated.loss(ablated(b), b)["loss"].backward()
    assert all(p.grad is not None for p in ablated.parameters() if p.requires_grad)


@pytest.mark.parametrize("recursive", [True, False])
def test_concat_fusion_and_fsm_modes_run(recursive):
    model = dpl(fusion="concat", fsm_recursive=recursive)
    assert model.head.in_features == 2 * model.hidden
    assert dpl(fusion="concat", use_fipl=False).head.in_features == model.hidden
    out = model(batch([3, 5], [4, 1]))
    assert torch.isfinite(out["logit"]).all()


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="choose one of: add, concat, attention"):
        dpl(fusion="sum")
    with pytest.raises(UserError, match="lreg_steps"):
        dpl(lreg_steps="middle")
    with pytest.raises(UserError, match="lreg_sign"):
        dpl(lreg_sign=0.5)
    with pytest.raises(UserError, match="at least one branch"):
        dpl(use_vqpl=False, use_fipl=False)
    with pytest.raises(UserError, match="indicators.k"):
        dpl(k=3)(batch([1, 4], [1, 1]))
    with pytest.raises(UserError, match="indicator levels"):
        dpl()({"image": torch.rand(1, 3, 32, 32), "label": torch.tensor([0])})


def test_provenance_names_the_variant():
    prov = dpl(use_fipl=False, fsm_recursive=False).provenance()
    assert prov["backbone"] == "convnext_atto" and prov["weights"] == "random init"
    assert prov["variant"]["branches"] == "VQPL" and prov["variant"]["fsm_recursive"] is False
    assert prov["variant"]["delta"] == "107/320"
