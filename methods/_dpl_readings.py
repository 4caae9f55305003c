"""The two readings of DPL (methods/dpl.py): the paper's text read literally, and the authors'
public release (facts read from it, nothing copied: it has no licence).

``methods.dpl.reading: release | paper`` sets every option below; an option given explicitly
(not null) wins over the preset. ``resolve(reading, given)`` returns the options and the list
of explicit ones that differ from the preset (named in the provenance). Each option, with
what each reading says:

aggregation        paper ``sum``: f_VQ = sum_t h_t, f_FI = sum_t w_t, fused by adding (§3.1-3.2);
                   release ``mean``: a running mean of each branch's states, fused (f_VQ + f_FI)/2
                   (under ``fusion: add``; concat/attention fuse the means).
branch_projection  paper ``false``: both GRUs read the same pooled FSM feature;
                   release ``true``: from step 2 on each branch passes f_t through its own 1x1
                   convolution before pooling (here a Linear on the pooled f_t: a 1x1 conv
                   commutes with average pooling, so the two are the same function).
hidden             paper: not given, the harness uses 256; release ``channels``: hidden size = c.
lreg_sign          paper ``1``: Eq. (2) as printed, minimised (lowers hard samples' entropy);
                   release ``-1``: the entropy is maximised (the text's "defer decisions").
lreg_steps         paper ``all_up_to_last`` (Tab. 8's best, the double dagger);
                   release ``last``: the final prediction only.
lreg_norm          paper ``batch``: Eq. (2) sums over samples, the harness divides by N;
                   release ``hard``: divided by the number of hard samples (CE > ln 2).
eval_positions     (only without stage II) paper: not given, the harness ``shared``: one seeded
                   window sequence for the whole batch; release ``per_sample``: every sample
                   draws its own (seeded per batch).
ppo_return         paper ``total``: R_t = sum of the rewards at all steps;
                   release ``to_go``: the discounted reward-to-go.
ppo_gamma          paper ``1.0`` (no discount); release ``0.7``.
ppo_normalize      paper ``false``; release ``true``: returns standardised over batch x steps.
ppo_epochs         paper: not given, the harness uses 4 updates per batch; release ``1``.
ppo_clip_form      paper ``printed``: min(ratio, clip(ratio)) * A as typeset in Eq. (4);
                   release ``schulman``: min(ratio * A, clip(ratio) * A) (PPO as cited).
value_weight       paper ``1.0`` (Eq. 6 as printed); release ``0.5`` (0.5 * MSE).
entropy_weight     paper ``1.0`` (Eq. 6 as printed); release ``0.01``.
policy_sigma       paper ``state``: Phi outputs mu_t and sigma_t; release ``learned``: a
                   learned, state-independent log sigma (initial sigma 0.1).
policy_trunk       paper ``separate``: V is its own sub-network; release ``shared``: V is a head
                   on Phi's recurrent state (a shared actor-critic trunk).
ppo_logprob        paper ``raw``: log p of the Gaussian sample; release ``clamped``: the action
                   is clamped to [0, 1] before its log-probability is taken.
reward_branch      paper ``fused``: c_t from the fused prediction; release ``alternate``: from one
                   branch's prediction, the branches taking turns epoch by epoch.
stage2_optimizer   paper ``recipe``: one optimiser for the framework (the stage's recipe: params
                   ``train``, or ``stage_recipe`` under ``train.recipe: own``); release
                   ``{type: Adam, lr: 3e-4}`` for stage II, whatever ``train.recipe`` says.
stage1_checkpoint  paper ``select``: the checkpoint ``train.select`` names; release ``best_val``:
                   the stage-I epoch with the best validation AUC (the release validates on c40);
                   also ``last`` or an epoch number.
views              paper ``train``: ``train.views`` (by default each image once, a random JPEG
                   version); release ``all_jpeg``: every image in all four JPEG versions in the
                   same step (also ``single``).
sampler            paper ``train``: ``train.sampler`` (the text does not say how batches are
                   drawn); release ``balanced``: each fake paired with a random real
                   (``engine.loaders.BalancedSampler``; also ``uniform``).

Not expressible as options of this method (named where they live): the release's
indicators (CLIP-IQA+ VQI, logit-scaled FII, prompts without the period,
percent rounding, fixed thresholds) are ``indicators.*`` (benchmark/indicators).
"""
from __future__ import annotations

from benchmark.errors import UserError

READINGS = {
    "paper": dict(aggregation="sum", branch_projection=False, hidden=256, lreg_sign=1.0,
                  lreg_steps="all_up_to_last", lreg_norm="batch", eval_positions="shared",
                  ppo_return="total", ppo_gamma=1.0, ppo_normalize=False, ppo_epochs=4,
                  ppo_clip_form="printed", value_weight=1.0, entropy_weight=1.0, policy_sigma="state",
                  policy_trunk="separate", ppo_logprob="raw", reward_branch="fused",
                  stage2_optimizer="recipe", stage1_checkpoint="select", views="train",
                  sampler="train"),
    "release": dict(aggregation="mean", branch_projection=True, hidden="channels", lreg_sign=-1.0,
                    lreg_steps="last", lreg_norm="hard", eval_positions="per_sample",
                    ppo_return="to_go", ppo_gamma=0.7, ppo_normalize=True, ppo_epochs=1,
                    ppo_clip_form="schulman", value_weight=0.5, entropy_weight=0.01, policy_sigma="learned",
                    policy_trunk="shared", ppo_logprob="clamped", reward_branch="alternate",
                    stage2_optimizer={"type": "Adam", "lr": 3.0e-4}, stage1_checkpoint="best_val",
                    views="all_jpeg", sampler="balanced"),
}
KEYS = tuple(READINGS["paper"])


def resolve(reading: str, given: dict) -> tuple[dict, list[str]]:
    """(options, explicit differences): the preset of ``reading`` updated by every non-null
    option in ``given``; the second item lists ``key=value`` for each given option that differs
    from the preset."""
    if reading not in READINGS:
        raise UserError(f"methods.dpl.reading={reading!r} is unknown; choose one of: {', '.join(READINGS)}")
    preset = READINGS[reading]
    unknown = sorted(set(given) - set(KEYS))
    if unknown:
        raise UserError(f"methods.dpl: {unknown} are not reading options; they are {', '.join(KEYS)}")
    explicit = {k: v for k, v in given.items() if v is not None}
    diffs = [f"{k}={_text(v)}" for k, v in explicit.items() if v != preset[k]]
    return {**preset, **explicit}, diffs


def _text(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {x}" for k, x in v.items()) + "}"
    return str(v)


CHOICES = {"aggregation": ("sum", "mean"), "lreg_steps": ("first", "last", "all_up_to_last"),
           "lreg_norm": ("batch", "hard"), "eval_positions": ("shared", "per_sample"),
           "ppo_return": ("total", "to_go"), "ppo_clip_form": ("schulman", "printed"),
           "policy_sigma": ("state", "learned"), "policy_trunk": ("separate", "shared"),
           "ppo_logprob": ("raw", "clamped"), "reward_branch": ("fused", "alternate"),
           "views": ("train", "single", "all_jpeg"), "sampler": ("train", "uniform", "balanced")}


def check(opts: dict) -> None:
    """One UserError naming the first reading option whose value is not allowed."""
    def bad(key, allowed):
        raise UserError(f"methods.dpl.{key}={opts[key]!r} is not allowed; use {allowed}")
    for key, allowed in CHOICES.items():
        if opts[key] not in allowed:
            bad(key, "one of: " + ", ".join(allowed))
    if float(opts["lreg_sign"]) not in (1.0, -1.0):
        bad("lreg_sign", "1 or -1")
    if not (opts["hidden"] == "channels" or (isinstance(opts["hidden"], int) and opts["hidden"] > 0)):
        bad("hidden", "a positive integer or 'channels'")
    if not 0.0 < float(opts["ppo_gamma"]) <= 1.0:
        bad("ppo_gamma", "a discount in (0, 1]")
    if not (isinstance(opts["ppo_epochs"], int) and opts["ppo_epochs"] >= 1):
        bad("ppo_epochs", "an integer >= 1")
    if not (opts["stage2_optimizer"] == "recipe" or (isinstance(opts["stage2_optimizer"], dict)
                                                     and "type" in opts["stage2_optimizer"])):
        bad("stage2_optimizer", "'recipe' or an mmengine optimizer config such as {type: Adam, lr: 3.0e-4}")
    ckpt = opts["stage1_checkpoint"]
    if not (ckpt in ("select", "last", "best_val") or (isinstance(ckpt, int) and ckpt >= 1)):
        bad("stage1_checkpoint", "select, last, best_val or an epoch number")
