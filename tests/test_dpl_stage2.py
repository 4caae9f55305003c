"""DPL stage II (PPO, Eq. 4-6) by hand, the stage freeze, and every params.yaml DPL variant.

Eq. (1) and its binning are tested by hand in test_indicators.py (test_softmax_hand_example,
test_quantile_binning_known_array); the FSM update and Eq. (2) in test_dpl.py.
"""
from __future__ import annotations

import math

import benchmark  # noqa: F401  (torchvision shim before timm)
import pytest
import torch
from mmengine.optim import OptimWrapper

from benchmark import config, pipeline
from methods._ppo import (clipped_surrogate, gaussian_entropy, ppo_objective, returns, step_rewards,
                          true_class_prob, value_loss)
from methods.dpl import DPL

LN3 = math.log(3.0)
TINY = dict(backbone="resnet10t", hidden=16, policy_hidden=8)


def batch(n=4, seed=0, levels=None):
    g = torch.Generator().manual_seed(seed)
    lv = levels if levels is not None else [1 + i % 5 for i in range(n)]
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "label": torch.arange(n) % 2,
            "vqi_level": torch.tensor(lv), "fii_level": torch.tensor(lv[::-1])}


# -- Eq. (4)-(6) by hand ------------------------------------------------------------------
RATIOS = torch.tensor([[0.5, 1.5, 0.5, 1.5, 1.0]])
ADV = torch.tensor([[1.0, 2.0, -1.0, -1.0, 3.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])  # the last action is past the sample's last step


@pytest.mark.parametrize("form,expected", [
    # eps = 0.2: clip(0.5) = 0.8, clip(1.5) = 1.2
    # schulman min(rA, clip(r)A): 0.5, min(3, 2.4)=2.4, min(-0.5,-0.8)=-0.8, min(-1.5,-1.2)=-1.5 -> -(0.6/4)
    ("schulman", -0.15),
    # printed min(r, clip(r))*A: 0.5*1, 1.2*2, 0.5*-1, 1.2*-1 = 0.5, 2.4, -0.5, -1.2 -> -(1.2/4)
    ("printed", -0.3),
])
def test_eq4_clipped_surrogate_by_hand(form, expected):
    log_prob = RATIOS.log().requires_grad_()
    loss = clipped_surrogate(log_prob, torch.zeros_like(RATIOS), ADV, MASK, eps=0.2, form=form)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    if form == "schulman":  # d/dlogp of -rA/4 = -rA/4 where unclipped; 0 where the clipped term wins
        assert log_prob.grad.tolist()[0] == pytest.approx([-0.125, 0.0, 0.0, 0.375, 0.0], abs=1e-6)


def test_eq5_value_loss_and_eq6_entropy_by_hand():
    v, ret = torch.tensor([[0.5, 0.0, 1.0]]), torch.tensor([[1.0, 0.5, 1.0]])
    assert value_loss(v, ret, torch.tensor([[1.0, 1.0, 0.0]])).item() == pytest.approx(0.25)  # (.25+.25)/2
    # 0.5 ln(2 pi e) = 1.418939; sigma = 0.5 subtracts ln 2
    assert gaussian_entropy(torch.tensor([1.0, 0.5])).tolist() == pytest.approx([1.418939, 0.725791], abs=1e-6)
    assert torch.distributions.Normal(0.3, 0.5).entropy().item() == pytest.approx(0.725791, abs=1e-6)


def test_rewards_and_returns_by_hand():
    logits = torch.tensor([[0.0, LN3, -LN3], [0.0, -LN3, 5.0]])
    label = torch.tensor([1, 0])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    # c: sample 0 (fake) [.5, .75, .25]; sample 1 (real) [.5, .75, sigmoid(-5)]
    close = torch.testing.assert_close
    close(true_class_prob(logits, label)[:, :2], torch.tensor([[0.5, 0.75], [0.5, 0.75]]))
    r = step_rewards(logits, label, valid)
    close(r, torch.tensor([[0.25, -0.5], [0.25, 0.0]]))  # sample 1's step 3 is past its last
    close(returns(r, "total"), torch.tensor([[-0.25, -0.25], [0.25, 0.25]]))
    close(returns(r, "to_go"), torch.tensor([[-0.25, -0.5], [0.25, 0.0]]))


def test_eq6_combines_the_terms_with_advantage_r_minus_v():
    lp = torch.zeros(1, 2)
    ent, v, ret, mask = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2)
    out = ppo_objective(lp, lp, ent, v, ret, mask, eps=0.2, form="schulman", value_weight=1.0, entropy_weight=0.5)
    # ratio 1: L_REW = -mean(A) = -mean(0.5, 1.0) = -0.75; L_SE = (0.25 + 1) / 2 = 0.625; L_EN = 1.5
    assert out["l_rew"].item() == pytest.approx(-0.75)
    assert out["l_se"].item() == pytest.approx(0.625)
    assert out["loss"].item() == pytest.approx(-0.75 + 0.625 - 0.5 * 1.5)


# -- structure ----------------------------------------------------------------------------
@pytest.mark.parametrize("trunk", ["separate", "shared"])
def test_stage2_trains_only_phi_and_v_everything_else_is_bit_identical(trunk):
    torch.manual_seed(0)
    model = DPL(**TINY, policy_trunk=trunk)
    model.set_stage("II")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    trained = {"policy", "value"} if trunk == "separate" else {"policy"}  # shared: V is a head of Phi
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == trained
    wrapper = OptimWrapper(torch.optim.Adam(params, lr=1e-2))
    b = batch(8)
    losses = model.train_step(b, wrapper)
    assert set(losses) == {"loss", "l_rew", "l_se", "l_en"} and all(torch.isfinite(v) for v in losses.values())
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("policy.", "value.")) for k in changed), changed
    value = "value." if trunk == "separate" else "policy.value_head."
    assert any(k.startswith("policy.out.") for k in changed) and any(k.startswith(value) for k in changed)
    assert not model.backbone.training  # BatchNorm statistics frozen in stage II


def test_stage2_old_policy_ratio_starts_at_one():
    torch.manual_seed(0)
    model = DPL(**TINY)
    model.set_stage("II")
    model.train()
    b = batch(6)
    with torch.no_grad():
        out = model(b)
        old = model.policy.evaluate(out["fsm_pooled"][:, :-1], out["actions"])[0]
    new = model.policy.evaluate(out["fsm_pooled"][:, :-1], out["actions"])[0]
    torch.testing.assert_close(new, old)
    # the sampled actions are scaled to the window starts the FSM used
    want = torch.round(out["actions"].clamp(0, 1) * (model.channels - model.delta)).long()
    assert torch.equal(out["positions"], want)


def test_phi_level2_sample_is_unaffected_by_steps_3_to_5(monkeypatch):
    torch.manual_seed(0)
    model = DPL(**TINY).eval()  # eval: Phi gives l_t = mu_t
    b = batch(2, levels=[2, 5])
    b["fii_level"] = torch.tensor([2, 5])
    with torch.no_grad():
        ref = model(b)["logit"]
        step, calls = model.policy.step, []

        def late_change(pooled, h):  # Phi's l_2, l_3, l_4 move to the top end; l_1 unchanged
            calls.append(1)
            mu, sigma, h = step(pooled, h)
            return (mu if len(calls) == 1 else torch.ones_like(mu)), sigma, h
        monkeypatch.setattr(model.policy, "step", late_change)
        out = model(b)["logit"]
    assert len(calls) == 4
    assert torch.equal(out[0], ref[0]) and not torch.equal(out[1], ref[1])


@pytest.mark.parametrize("name", sorted(n for n, root in pipeline.method_variants(config.load_params()).items()
                                        if root == "dpl"))
def test_each_dpl_variant_builds_trains_a_step_and_differs_where_it_should(name):
    params = config.load_params({"methods.dpl.backbone": "resnet10t", "methods.dpl.hidden": "16",
                                 "methods.dpl.policy_hidden": "8"})
    _, opts = pipeline.resolve_method(params, name)
    if "backbone" in opts and opts["backbone"] != "resnet10t":
        pytest.skip("a Tab. 6 backbone swap: built and stepped in test_variant_backbones_build")
    # the reading under which the variant differs from dpl (Tab. 8's dagger is the release's own L_REG)
    reading = next((r for r in ("release", "paper")
                    if _resolved(params, name, r) != _resolved(params, "dpl", r)), None)
    if reading is None and "backbone" in params["methods"][name]:
        pytest.skip("a Tab. 6 row at the default backbone: the pipeline reuses dpl's model (stages._reuse)")
    assert reading, f"{name} resolves to the same options as dpl under both readings"
    params = config.load_params({"methods.dpl.backbone": "resnet10t", "methods.dpl.hidden": "16",
                                 "methods.dpl.policy_hidden": "8", "methods.dpl.reading": reading})
    torch.manual_seed(0)
    variant = pipeline.build_method(params, name)
    torch.manual_seed(0)
    full = pipeline.build_method(params, "dpl")
    diff = {k: v for k, v in _resolved(params, name, reading).items() if _resolved(params, "dpl", reading)[k] != v}
    b = batch(6)
    for stage, _ in variant.training_stages(1):
        variant.set_stage(stage)
        variant.train()
        params_ = [p for p in variant.parameters() if p.requires_grad]
        before = [p.detach().clone() for p in params_]
        losses = variant.train_step(b, OptimWrapper(torch.optim.Adam(params_, lr=1e-3)))
        assert torch.isfinite(losses["loss"])
        assert any(not torch.equal(p0, p) for p0, p in zip(before, params_))
    stages_v, stages_f = variant.training_stages(1), full.training_stages(1)
    if "stage2_epochs" in diff:
        assert stages_v == [("I", 1)] and len(stages_f) == 2 and not hasattr(variant, "policy")
        return
    if {"lreg_weight", "lreg_steps"} & set(diff):  # same network, another objective
        out = full.train()(b)
        assert variant.loss(out, b)["loss"].item() != full.loss(out, b)["loss"].item()
        return
    shapes_v = {k: v.shape for k, v in variant.state_dict().items()}
    shapes_f = {k: v.shape for k, v in full.state_dict().items()}
    assert shapes_v != shapes_f or variant.provenance() != full.provenance()
    variant.eval(), full.eval()
    with torch.no_grad():
        assert not torch.allclose(variant(b)["logit"], full(b)["logit"])


def _resolved(params, name, reading):
    """Every option of ``name`` as the model sees it when methods.dpl.reading is ``reading``
    (a variant's own ``reading`` wins), preset + explicit options."""
    from methods import _dpl_readings
    _, opts = pipeline.resolve_method(params, name)
    own = opts.pop("reading")  # the variant's own reading, or its base's
    reading = own if own != params["methods"]["dpl"]["reading"] else reading
    given = {k: opts.pop(k) for k in list(opts) if k in _dpl_readings.KEYS}
    return {**opts, "reading": reading, **_dpl_readings.resolve(reading, given)[0]}


@pytest.mark.parametrize("options, other, expected", [
    ({"ppo_epochs": 2}, {}, "I"),                           # a stage-II option: DPL's stage I, then its own II
    ({"stage2_epochs": 0}, {}, "I"),                        # no stage II: DPL's stage I is the model
    ({"ppo_epochs": 2, "stage1_checkpoint": 3}, {}, None),  # II from stage-I epoch 3: DPL kept only last, best
    ({"ppo_epochs": 2}, {"stage2_epochs": 0}, None),        # the other has no stage II, so no stage-I dir
    ({"fusion": "concat"}, {}, None),                       # a stage-I option: trains
])
def test_reused_stage_by_hand(options, other, expected):
    assert DPL.reused_stage({"backbone": "resnet10t", **options}, {"backbone": "resnet10t", **other}) == expected


def test_tab9_without_clip_weights_says_stand_in():
    prov = DPL(**TINY, image_features="add_branches").provenance()["variant"]
    assert "not CLIP" in prov["image_encoder"]
    assert DPL(**TINY).provenance()["variant"]["image_encoder"] == "none"


def test_variant_resolution_inherits_recursively_and_own_keys_win():
    params = {"methods": {"dpl": {"k": 5, "hidden": 8}, "a": {"base": "dpl", "hidden": 4},
                          "b": {"base": "a", "k": 3}, "loop": {"base": "loop"}}}
    assert pipeline.resolve_method(params, "b") == ("dpl", {"k": 3, "hidden": 4})
    with pytest.raises(benchmark.errors.UserError, match="cycle"):
        pipeline.resolve_method(params, "loop")
    with pytest.raises(benchmark.errors.UserError, match="has no entry"):
        pipeline.resolve_method(params, "baseline")


def test_a_variant_key_follows_its_base():
    params = config.load_params()
    args = {"method": "dpl_wo_vqpl", "train_set": "ff_c23", "seed": 0}
    base = pipeline.stage_key("train", params, **args)
    assert pipeline.stage_key("train", config.load_params({"methods.dpl.hidden": "8"}), **args) != base
    assert pipeline.stage_key("train", config.load_params({"methods.baseline.backbone": "resnet18"}), **args) == base


@pytest.mark.parametrize("mode,expected", [
    # labels 0 0 1; a prediction is wrong where its CE > ln 2 (P(true) < .5; logit 0 is not wrong).
    # step: s0 only step 2 (LN3) wrong: H(.75) = .562335; s1 (all logits 0) none;
    #       s2 only step 2 (logit -3) wrong: H(sigmoid(-3)) = .190865      -> 0.753200 / 3
    ("step", 0.251067),
    # final: s0 (final LN3, label 0) hard: mean(H(.5), H(.75)) = .627741; s1 (final 0) and s2 (final 9)
    # not -> 0.627741 / 3
    ("final", 0.209247),
])
def test_hard_sample_readings_by_hand(mode, expected):
    out = {"logit": torch.tensor([LN3, 0.0, 9.0]), "last_step": torch.tensor([2, 3, 3]),
           "step_logits": torch.tensor([[0.0, LN3, 5.0], [0.0, 0.0, 0.0], [LN3, -3.0, 9.0]])}
    model = DPL(**TINY, k=3, hard_samples=mode, reading="paper")  # L_REG as printed: all steps, / N
    assert model.loss(out, {"label": torch.tensor([0, 0, 1])})["lreg"].item() == pytest.approx(expected, abs=1e-5)


def test_step_prediction_readings():
    torch.manual_seed(0)
    cum = DPL(**TINY).eval()
    hid = DPL(**TINY, step_prediction="hidden").eval()
    hid.load_state_dict(cum.state_dict())
    b = batch(3, levels=[5, 5, 2])
    with torch.no_grad():
        a, h = cum(b), hid(b)
    torch.testing.assert_close(a["step_logits"][:, 0], h["step_logits"][:, 0])  # one step: sum = state
    assert not torch.allclose(a["step_logits"][:, 1:], h["step_logits"][:, 1:])
    # the final logit is each reading's prediction at the last effective step
    torch.testing.assert_close(h["logit"], h["step_logits"][torch.arange(3), h["last_step"] - 1])


def _backbone_swaps():
    params = config.load_params()
    return sorted(n for n in pipeline.method_variants(params)
                  if pipeline.resolve_method(params, n)[1].get("backbone")
                  != params["methods"][pipeline.resolve_method(params, n)[0]].get("backbone"))


@pytest.mark.parametrize("name", _backbone_swaps())
def test_variant_backbones_build(name):
    """Tab. 6: each backbone swap builds at 64 px and takes one training step."""
    params = config.load_params({"methods.dpl.hidden": "16", "methods.dpl.policy_hidden": "8"})
    torch.manual_seed(0)
    model = pipeline.build_method(params, name).train()
    b = batch(2)
    b["image"] = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    losses = model.train_step(b, OptimWrapper(torch.optim.Adam(trainable, lr=1e-3)))
    assert torch.isfinite(losses["loss"]) and any(not torch.equal(a, p) for a, p in zip(before, trainable))
    assert model.provenance()["backbone"] == pipeline.resolve_method(params, name)[1]["backbone"]
