"""DPL's readings (release | paper): the preset, explicit options winning, and every reading
option changing what it should and nothing else; hand values for the release's mechanisms."""
from __future__ import annotations

import math

import benchmark  # noqa: F401  (torchvision shim before timm)
import pytest
import torch
from mmengine.optim import OptimWrapper

from benchmark.errors import UserError
from methods import _dpl_readings as readings
from methods._losses import entropy_regulariser, hard_sample_mask, lreg_step_mask
from methods._ppo import returns
from methods.dpl import DPL

TINY = dict(backbone="resnet10t", policy_hidden=8)
LN3 = math.log(3.0)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lv = [1 + (i * 2) % 5 for i in range(n)]
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "label": torch.arange(n) % 2,
            "vqi_level": torch.tensor(lv), "fii_level": torch.tensor(lv[::-1])}


# -- the preset ---------------------------------------------------------------------------
@pytest.mark.parametrize("reading", sorted(readings.READINGS))
def test_the_preset_sets_every_reading_option(reading):
    model = DPL(**TINY, reading=reading)
    assert model.opts == readings.READINGS[reading] and model.explicit == []
    assert model.provenance()["setting"] == f"reading {reading}"
    assert model.hidden == (256 if reading == "paper" else model.backbone.num_features)


def test_every_reading_option_is_a_constructor_argument_defaulting_to_the_preset():
    """params.yaml options are checked against the constructor (benchmark.schema.methods)."""
    from benchmark.schema.methods import signature
    args = signature(DPL)
    assert set(readings.KEYS) <= set(args) and all(args[k].default is None for k in readings.KEYS)


def test_explicit_options_win_and_are_named_in_the_provenance():
    model = DPL(**TINY, reading="release", aggregation="sum", lreg_sign=-1.0, views=None)
    assert model.opts["aggregation"] == "sum" and model.opts["lreg_sign"] == -1.0  # -1 is the preset's too
    assert model.opts["views"] == "all_jpeg"  # null = the preset's
    assert model.explicit == ["aggregation=sum"]
    assert model.provenance()["setting"] == "reading release, aggregation=sum"


def test_bad_readings_and_values_are_one_line_errors():
    with pytest.raises(UserError, match="reading='text'.*release, paper|paper, release"):
        DPL(**TINY, reading="text")
    with pytest.raises(UserError, match="aggregation='max'.*sum, mean"):
        DPL(**TINY, aggregation="max")
    with pytest.raises(UserError, match="ppo_gamma"):
        DPL(**TINY, ppo_gamma=1.5)
    with pytest.raises(UserError, match="stage1_checkpoint"):
        DPL(**TINY, stage1_checkpoint="best")
    with pytest.raises(UserError, match="not reading options"):
        readings.resolve("paper", {"agregation": "sum"})


# -- each reading option changes what it should and nothing else --------------------------
#: what each option may change: the parameter shapes, the forward of the model with stage II
#: (eval) and without (eval, randomizer), L_REG on a fixed output, the stage-II loss on a fixed
#: rollout (values and gradients; old log-probabilities shifted so the ratio is not 1), the number of PPO updates per
#: batch, the stage-II recipe keys, the stage-II starting checkpoint, the training options.
EXPECTED = {
    "aggregation": {"forward", "forward_i", "ppo"}, "branch_projection": {"shapes", "forward", "forward_i", "ppo"},
    "hidden": {"shapes", "forward", "forward_i", "ppo"}, "lreg_sign": {"lreg"}, "lreg_steps": {"lreg"},
    "lreg_norm": {"lreg"}, "eval_positions": {"forward_i"}, "ppo_return": {"ppo"}, "ppo_gamma": {"ppo"},
    "ppo_normalize": {"ppo"}, "ppo_epochs": {"updates"}, "ppo_clip_form": {"ppo"}, "value_weight": {"ppo"},
    "entropy_weight": {"ppo"}, "policy_sigma": {"shapes", "ppo"}, "policy_trunk": {"shapes", "ppo"},
    "ppo_logprob": {"ppo"}, "reward_branch": {"ppo"}, "stage2_optimizer": {"recipe"},
    "stage1_checkpoint": {"stage_checkpoint"}, "views": {"train_options"},
    "sampler": {"train_options"},
}


def _probes(opts: dict, like: DPL | None = None) -> tuple[dict, DPL]:
    torch.manual_seed(0)
    model = DPL(**TINY, reading="release", **opts)
    if like is not None:  # same values wherever the shapes agree, so only the option differs
        ref = like.state_dict()
        model.load_state_dict({k: ref[k] if k in ref and ref[k].shape == v.shape else v
                               for k, v in model.state_dict().items()})
    if hasattr(model, "policy") and hasattr(model.policy, "log_sigma"):
        model.policy.log_sigma.data.fill_(0.0)  # sigma 1: rollouts leave [0, 1], so clamping shows
    b = batch()
    out = {"shapes": {k: tuple(v.shape) for k, v in model.state_dict().items()}}
    with torch.no_grad():
        out["forward"] = model.eval()(b)["logit"]
        stage1 = DPL(**TINY, reading="release", stage2_epochs=0, **opts)
        stage1.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("policy.", "value."))})
        out["forward_i"] = stage1.eval()(b)["logit"]
        fixed = {"logit": torch.tensor([0.5, -1.0, 2.0, LN3, 0.1, -0.3]), "last_step": b["vqi_level"].clamp(1, 5),
                 "step_logits": torch.linspace(-2, 2, 30).view(6, 5)}
        out["lreg"] = model.loss(fixed, b)["lreg"]
    model.set_stage("II")
    model.set_epoch(1)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        roll = model(b)
        old = model.policy.evaluate(roll["fsm_pooled"][:, :-1], roll["actions"])[0]
    shift = 0.5 * (-1.0) ** torch.arange(old.numel()).view_as(old)  # ratios 0.61 and 1.65: both clip ends
    terms = model.ppo_loss(roll, b, old + shift)
    trained = [q for q in model.parameters() if q.requires_grad]
    grads = torch.autograd.grad(terms["loss"], trained, allow_unused=True)
    out["ppo"] = torch.cat([torch.stack(list(terms.values())).detach()]  # the terms and their gradients
                           + [g.flatten() for g in grads if g is not None])
    calls = []

    class Counting(OptimWrapper):
        def update_params(self, loss, **kw):
            calls.append(1)

    model.train_step(b, Counting(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)))
    out["updates"] = len(calls)
    out["recipe"] = model.recipe_overrides("II")
    out["stage_checkpoint"] = model.stage_checkpoint("II")
    out["train_options"] = model.train_options()
    return out, model


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, atol=1e-6, rtol=0)
    return a == b


@pytest.fixture(scope="module")
def release_probes():
    return _probes({})


@pytest.mark.parametrize("key", readings.KEYS)
def test_each_reading_option_changes_what_it_should_and_nothing_else(key, release_probes):
    assert set(EXPECTED) == set(readings.KEYS)
    ref, model = release_probes
    paper = readings.READINGS["paper"][key]
    assert paper != readings.READINGS["release"][key]
    got, _ = _probes({key: paper}, like=model)
    changed = {p for p in ref if not _same(ref[p], got[p])}
    assert changed == EXPECTED[key]


# -- hand values of the release's mechanisms ----------------------------------------------
class Counter(torch.nn.Module):
    """A stand-in GRU whose t-th call returns scale * t in every hidden unit."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale, self.calls = scale, 0

    def forward(self, x, h):
        self.calls += 1
        return torch.full_like(h, self.scale * self.calls)


def test_mean_aggregation_by_hand():
    # GRUs replaced by fixed states: VQ gives a_t = t, FI gives b_t = 10 t (all hidden units);
    # levels k1 = 2, k2 = 3; head = sum of the hidden units (weight 1, bias 0), hidden 2.
    def model(aggregation):
        m = DPL(**TINY, hidden=2, aggregation=aggregation, branch_projection=False, stage2_epochs=0).eval()
        m.gru_vq, m.gru_fi = Counter(1.0), Counter(10.0)
        m.head.weight.data.fill_(1.0)
        m.head.bias.data.zero_()
        return m
    b = {**batch(1), "vqi_level": torch.tensor([2]), "fii_level": torch.tensor([3])}
    with torch.no_grad():
        s, m = model("sum")(b), model("mean")(b)
    # sum: f_VQ,t = 1, 3, 3, 3, 3 (frozen after k1 = 2); f_FI,t = 10, 30, 60, 60, 60; logit = 2 (f_VQ + f_FI)
    assert s["step_logits"][0].tolist() == pytest.approx([22, 66, 126, 126, 126])
    # mean: f_VQ,t = 1, 1.5, 1.5, ...; f_FI,t = 10, 15, 20, 20, 20; logit = 2 (f_VQ + f_FI) / 2
    assert m["step_logits"][0].tolist() == pytest.approx([11, 16.5, 21.5, 21.5, 21.5])
    assert s["logit"].item() == pytest.approx(126) and m["logit"].item() == pytest.approx(21.5)


def test_release_lreg_by_hand():
    # labels 0 1 0 1; final logits 0.5 (CE > ln 2: hard), 2 (easy), 0.0 (CE = ln 2: not hard), -LN3 (hard)
    logits = torch.tensor([0.5, 2.0, 0.0, -LN3])
    label = torch.tensor([0, 1, 0, 1])
    hard = hard_sample_mask(logits, label)
    assert hard.tolist() == [1.0, 0.0, 0.0, 1.0]
    steps = lreg_step_mask(torch.tensor([3, 3, 3, 3]), 3, "last")
    step_logits = torch.stack([torch.zeros(4), torch.zeros(4), logits], 1)
    # H(sigmoid(.5)) = 0.662847, H(sigmoid(-ln 3)) = H(.25) = 0.562335; / 2 hard samples = 0.612591
    assert entropy_regulariser(step_logits, steps, hard, "hard").item() == pytest.approx(0.612591, abs=1e-6)
    assert entropy_regulariser(step_logits, steps, hard, "batch").item() == pytest.approx(0.306296, abs=1e-6)
    out = {"logit": logits, "last_step": torch.tensor([3, 3, 3, 3]), "step_logits": step_logits}
    lreg = DPL(**TINY, k=3, reading="release").loss(out, {"label": label})["lreg"]
    assert lreg.item() == pytest.approx(-0.612591, abs=1e-6)  # maximised: the sign is -1


def test_discounted_normalised_returns_by_hand():
    r = torch.tensor([[0.25, -0.5], [0.25, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # gamma 0.7: s0: R_1 = 0.25 + 0.7 * -0.5 = -0.1, R_2 = -0.5; s1: R_1 = 0.25, R_2 = 0 (off the mask)
    torch.testing.assert_close(returns(r, "to_go", gamma=0.7), torch.tensor([[-0.1, -0.5], [0.25, 0.0]]))
    # standardised over the 3 masked entries: mean -0.116667, population std 0.306413
    want = torch.tensor([[0.054393, -1.251035], [1.196642, 0.0]])
    torch.testing.assert_close(returns(r, "to_go", 0.7, True, mask), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(returns(r, "to_go", 1.0), torch.tensor([[-0.25, -0.5], [0.25, 0.0]]))


def test_learned_sigma_shared_trunk_and_clamped_actions():
    model = DPL(**TINY, reading="release")
    pol = model.policy
    assert pol.log_sigma.item() == pytest.approx(math.log(0.1)) and model.value is None
    model.set_stage("II")
    model.train()
    torch.manual_seed(0)
    out = model(batch(16))
    assert out["actions"].min() >= 0 and out["actions"].max() <= 1  # clamped before the log-prob
    logp, ent, value = pol.evaluate(out["fsm_pooled"][:, :-1], out["actions"])
    assert value is not None and value.shape == logp.shape
    # a state-independent sigma: every entropy is 0.5 ln(2 pi e 0.01)
    torch.testing.assert_close(ent, torch.full_like(ent, 0.5 * math.log(2 * math.pi * math.e * 0.01)))


def test_rewards_alternate_between_the_branches_epoch_by_epoch():
    torch.manual_seed(0)
    model = DPL(**TINY, reading="release")
    model.set_stage("II")
    model.train()
    b = batch()
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(b)
        old = model.policy.evaluate(out["fsm_pooled"][:, :-1], out["actions"])[0]
    assert out["branch_step_logits"].shape == (6, 2, 5)
    # under mean aggregation, the step prediction of one branch alone is head(f_branch)
    losses = {}
    for epoch in (0, 1, 2):
        model.set_epoch(epoch)
        losses[epoch] = model.ppo_loss(out, b, old)["loss"].item()
        lone = {**out, "step_logits": out["branch_step_logits"][:, epoch % 2],
                "step_valid": out["branch_step_valid"][:, epoch % 2]}
        lone.pop("branch_step_logits")
        assert losses[epoch] == pytest.approx(model.ppo_loss(lone, b, old)["loss"].item())
    assert losses[0] == losses[2] != losses[1]


def test_per_sample_test_time_positions_are_seeded():
    model = DPL(**TINY, reading="release", stage2_epochs=0).eval()
    with torch.no_grad():
        a, b = model(batch(8))["positions"], model(batch(8))["positions"]
    assert torch.equal(a, b) and len(set(a[:, 0].tolist())) > 1
    shared = DPL(**TINY, reading="release", stage2_epochs=0, eval_positions="shared").eval()
    assert len(set(shared(batch(8))["positions"][:, 0].tolist())) == 1


@pytest.mark.parametrize("reading,lr2,bs", [("paper", 5e-5, 32), ("release", 3e-4, 16)])
def test_own_recipe_and_the_stage2_optimizer(reading, lr2, bs):
    from benchmark.engine.optim import stage_recipe
    model = DPL(**TINY, reading=reading)
    shared = {"optimizer": {"type": "Adam", "lr": 1e-3}, "batch_size": 32, "epochs": 10}
    own = {**shared, "recipe": "own"}
    assert stage_recipe(model, "I", own)["optimizer"]["lr"] == 5e-5 and stage_recipe(model, "I", own)["batch_size"] == bs
    assert stage_recipe(model, "II", own)["optimizer"]["lr"] == lr2
    # under the shared recipe the release's stage II still has its own Adam (stage2_optimizer)
    assert stage_recipe(model, "II", shared)["optimizer"]["lr"] == (1e-3 if reading == "paper" else 3e-4)
    assert stage_recipe(model, "I", shared)["optimizer"]["lr"] == 1e-3
