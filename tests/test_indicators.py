"""VQI/FII: Eq. (1) on a tiny open_clip model, binning, the fallback backend, resolution, I/O."""
import json
import math

import benchmark  # noqa: F401

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import cbook

from benchmark.errors import UserError
from benchmark.indicators import (IndicatorLevels, OpenCLIPIndicator, build_indicator,
                                  compute_indicators, fallback_scores, fit_quantile_edges,
                                  load_indicator, to_levels, two_prompt_softmax)
from benchmark.data import store
from benchmark.data.jpeg import jpeg

TINY = "dpl-test-tiny-vit"
TINY_CFG = {"embed_dim": 64,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                         "layers": 2}}


@pytest.fixture(scope="module")
def photo():
    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def as_batch(*imgs):
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("tiny_cfg")
    (d / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(d)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    path = d / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


def test_softmax_hand_example():
    # cosines s1 = 0.3, s2 = 0.1 by construction: t1, t2 unit vectors, v unit
    v = torch.tensor([[0.3, 0.1, math.sqrt(1 - 0.09 - 0.01)]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 5.0, 0.0]])  # norms do not matter
    assert two_prompt_softmax(v, t).item() == pytest.approx(math.exp(0.3) / (math.exp(0.3) + math.exp(0.1)))
    assert two_prompt_softmax(v, t).item() == pytest.approx(0.549834, abs=1e-6)
    assert two_prompt_softmax(v, t, 100.0).item() == pytest.approx(1 / (1 + math.exp(-20)))


@pytest.mark.parametrize("use_scale", [False, True])
def test_eq1_on_tiny_open_clip(tiny_weights, photo, use_scale):
    import open_clip

    ind = OpenCLIPIndicator(model=TINY, weights=str(tiny_weights), logit_scale=use_scale)
    imgs = as_batch(cv2.resize(photo, (64, 64)), cv2.resize(jpeg(photo, 10), (80, 80))[:64, :64])
    got = ind.score(imgs)

    # independent computation: own model, own transform, own text embeddings
    model, _, pre = open_clip.create_model_and_transforms(TINY, pretrained=str(tiny_weights))
    model.eval()
    tok = open_clip.get_tokenizer(TINY)
    from PIL import Image
    x = torch.stack([pre(Image.fromarray(a)) for a in imgs.permute(0, 2, 3, 1).numpy()])
    with torch.no_grad():
        v = model.encode_image(x)
        a = model.logit_scale.exp().item() if use_scale else 1.0
        for key, prompts in (("vqi", ["Good photo.", "Bad photo."]),
                             ("fii", ["manipulated face.", "genuine face."])):
            t = model.encode_text(tok(prompts))
            s = [torch.nn.functional.cosine_similarity(v, t[i:i + 1]).numpy() for i in (0, 1)]
            q = np.exp(a * s[0]) / (np.exp(a * s[0]) + np.exp(a * s[1]))
            np.testing.assert_allclose(got[key], q, rtol=1e-5, atol=1e-6)
            assert got[key].shape == (2,) and np.all((got[key] >= 0) & (got[key] <= 1))
    d = ind.describe()
    assert d["backend"] == "open_clip" and d["model"] == TINY and d["logit_scale"] is use_scale
    assert d["weights"].endswith("tiny.pt")


def test_quantile_binning_known_array():
    s = np.arange(100) / 100
    edges = fit_quantile_edges(s, 5)
    assert edges.shape == (4,)
    lv = to_levels(s, edges, "high")
    assert np.bincount(lv)[1:].tolist() == [20] * 5
    assert set(lv[80:]) == {1} and set(lv[:20]) == {5}  # VQI: level 1 = highest score
    assert set(to_levels(s, edges, "low")[:20]) == {1}
    lev = IndicatorLevels.fit(s, s, "quantile", 5)
    v, f = lev.levels_from_scores(s, s)
    assert v[-1] == 1 and f[-1] == 1  # paper: FII level 1 = most "manipulated" = most identifiable


def test_fixed_binning_boundaries():
    lev = IndicatorLevels.fit(None, None, "fixed", 5)
    vqi = np.array([1.0, 0.55, 0.5499, 0.5, 0.45, 0.40, 0.3999, 0.0])
    v, _ = lev.levels_from_scores(vqi, np.zeros(8))
    assert v.tolist() == [1, 1, 2, 2, 3, 4, 5, 5]
    # the release's FII thresholds are on P(genuine) = 1 - fii: [0,50) [50,65) [65,80) [80,90) [90,100]
    genuine = np.array([0.0, 0.4999, 0.5, 0.6499, 0.65, 0.7999, 0.8, 0.8999, 0.9, 1.0])
    _, f = lev.levels_from_scores(np.zeros(10), 1.0 - genuine)
    assert f.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # direction: the most manipulated-looking face (fii = P(manipulated) = 1) is level 1, the
    # most identifiable, as under quantile binning and in the paper (§3.2)
    assert lev.levels_from_scores(np.zeros(2), np.array([1.0, 0.0]))[1].tolist() == [1, 5]
    v32, f32 = lev.levels_from_scores(vqi.astype(np.float32), (1.0 - genuine[:8]).astype(np.float32))
    assert v32.tolist() == v.tolist() and f32.tolist() == f.tolist()[:8]
    with pytest.raises(UserError):
        IndicatorLevels.fit(None, None, "fixed", 4)
    again = IndicatorLevels.from_dict(json.loads(json.dumps(lev.to_dict())))
    assert again == lev


def test_round_percent_rounds_before_thresholding():
    plain, rounded = (IndicatorLevels.fit(None, None, "fixed", 5, round_percent=r) for r in (False, True))
    # P(genuine) 0.4951 -> 49.51 % -> 50 %: level 2 once rounded, level 1 otherwise; VQI 0.54951 -> 55 %
    args = np.array([0.54951]), np.array([1 - 0.4951])
    assert [t.item() for t in plain.levels_from_scores(*args)] == [2, 1]
    assert [t.item() for t in rounded.levels_from_scores(*args)] == [1, 2]
    assert IndicatorLevels.from_dict(rounded.to_dict()) == rounded != plain


def test_fallback_meaning_and_determinism(photo):
    blurred = cv2.GaussianBlur(photo, (9, 9), 2.0)
    batch = as_batch(photo, jpeg(photo, 10), blurred)
    s1, s2 = fallback_scores(batch), fallback_scores(batch.clone())
    for k in ("vqi", "fii"):
        assert s1[k].shape == (3,) and np.array_equal(s1[k], s2[k])
        assert np.all((s1[k] >= 0) & (s1[k] <= 1))
    assert s1["vqi"][1] < s1["vqi"][0] and s1["vqi"][2] < s1["vqi"][0]

    # FII: a smoothed inner face (a generic local inconsistency) looks more manipulated
    small = cv2.resize(photo[:512], (64, 64), interpolation=cv2.INTER_AREA)
    edited = small.copy()
    edited[16:48, 16:48] = cv2.GaussianBlur(small, (5, 5), 1.5)[16:48, 16:48]
    f = fallback_scores(as_batch(small, edited))["fii"]
    assert f[1] > f[0]


def test_levels_on_images_and_auto_resolution(photo):
    with pytest.warns(UserWarning, match="fallback"):
        ind = build_indicator({"backend": "auto", "model": "ViT-B-32", "weights": None})
    d = ind.describe()
    assert d["backend"] == "fallback" and "NOT CLIP" in d["model"] and d["fallback_reason"]
    rng = np.random.default_rng(0)
    crops = [jpeg(cv2.resize(photo[y:y + 300, x:x + 300], (64, 64)), int(q))
             for y, x, q in zip(rng.integers(0, 250, 40), rng.integers(0, 200, 40), rng.integers(8, 100, 40))]
    imgs = as_batch(*crops)
    s = ind.score(imgs)
    lev = IndicatorLevels.fit(s["vqi"], s["fii"], "quantile", 5, backend=ind)
    v, f = lev.levels(imgs)
    assert v.dtype == torch.long and f.dtype == torch.long and v.shape == (40,)
    assert set(v.tolist()) == set(range(1, 6)) and int(f.min()) >= 1 and int(f.max()) <= 5


def test_explicit_open_clip_without_weights_is_a_user_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(UserError, match="nope.pt"):
        build_indicator({"backend": "open_clip", "weights": str(missing)})
    with pytest.raises(UserError, match="nope.pt"):  # auto never hides a mistyped weights path
        build_indicator({"backend": "auto", "weights": str(missing)})
    with pytest.raises(UserError, match="ViT-B-32"):
        build_indicator({"backend": "open_clip", "model": "ViT-B-32", "weights": None})
    with pytest.raises(UserError, match="unknown indicator backend"):
        build_indicator({"backend": "nonsense"})


def test_compute_indicators_end_to_end(tmp_path, photo):
    faces, rows, meta = tmp_path / "faces", [], []
    rng = np.random.default_rng(1)
    for i in range(24):
        crf = [0, 23, 40][i % 3]
        q = {0: "raw", 23: "c23", 40: "c40"}[crf]
        img = cv2.resize(photo[i * 5:i * 5 + 400, :400], (64, 64), interpolation=cv2.INTER_AREA)
        if crf:
            img = jpeg(img, 60 if crf == 23 else 12)
        [loc] = store.write_shard(faces, store.shard_path(q, f"v{i}"), [(store.member_name(0), img)])
        fake = i % 2
        rows.append(dict(video_id=f"v{i}", frame_idx=0, label=fake, manipulation="DF" if fake else "real",
                         quality=q, split="train" if i < 18 else "test", **loc))
        meta.append(dict(video_id=f"v{i}", quality=q, frame_idx=0, crf=crf,
                         strength=float(rng.random()) * fake))
    pd.DataFrame(rows).to_parquet(faces / "manifest.parquet")
    out = tmp_path / "ind"
    cfg = {"backend": "fallback", "binning": "quantile", "k": 3}
    summary = compute_indicators(faces, out, "D", cfg, fit_query="split == 'train'",
                                 metadata=pd.DataFrame(meta))
    df = pd.read_parquet(out / "D.parquet")
    assert list(df.columns) == ["video_id", "frame_idx", "quality", "split", "label",
                                "manipulation", "vqi", "fii", "vqi_level", "fii_level"]
    assert len(df) == 24 and df["vqi_level"].between(1, 3).all()
    js = json.loads((out / "D.json").read_text())
    assert js["backend"] == "fallback" and js["k"] == 3 and len(js["vqi_edges"]) == 2
    assert js["fitted_on"]["n"] == 18 and js["n_scored"] == 24
    assert js["spearman"]["vqi_vs_crf"]["rho"] < 0  # more compression -> lower quality
    assert summary["spearman"]["vqi_vs_crf"]["n"] == 24

    ind = load_indicator(out / "D.json", cfg)
    assert ind.backend.describe()["backend"] == "fallback"
    img = torch.from_numpy(cv2.resize(photo, (64, 64))).permute(2, 0, 1)[None]
    v, f = ind.levels(img)
    assert v.dtype == torch.long and 1 <= int(v[0]) <= 3
    assert all(torch.equal(a, b) for a, b in zip(ind.levels_from_scores(ind.score(img)), (v, f)))
    with pytest.raises(UserError, match="stale"):
        load_indicator(out / "D.json", {**cfg, "k": 5})

    # a test-only dataset reuses the training dataset's edges
    pd.DataFrame(rows).assign(split="test").to_parquet(faces / "manifest.parquet")
    with pytest.raises(UserError, match="fit query"):
        compute_indicators(faces, out, "T", cfg)
    js_t = compute_indicators(faces, out, "T", cfg, edges_from=out / "D.json")
    assert js_t["vqi_edges"] == js["vqi_edges"] and js_t["fitted_on"]["edges_from"].endswith("D.json")


def test_pretrained_tag_from_cache_else_open_clips_download(tiny_weights, tmp_path, monkeypatch):
    import shutil
    import urllib.error

    import open_clip

    cfg = {"url": "https://example.invalid/weights/tiny-cached.pt", "quick_gelu": False}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda m, t: cfg if (m, t) == (TINY, "fake") else {})
    monkeypatch.setattr(open_clip, "list_pretrained_tags_by_model", lambda m: ["fake"] if m == TINY else [])
    asked = []

    def offline(c, cache_dir=None):  # what open_clip's download meets on a machine without network
        asked.append((c["url"], cache_dir))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(UserError, match=r"not in the local cache and could not be downloaded \(URLError.*put "
                                        r"https://example.invalid/weights/tiny-cached.pt into " + str(tmp_path)):
        OpenCLIPIndicator(model=TINY, weights="fake", cache_dir=str(tmp_path))
    assert asked == [(cfg["url"], str(tmp_path))]  # a named tag is fetched by open_clip itself
    with pytest.raises(UserError, match="no open_clip weights for .* in the local cache"):
        OpenCLIPIndicator(model=TINY, weights=None, cache_dir=str(tmp_path))  # null never downloads
    assert len(asked) == 1
    monkeypatch.setattr(open_clip, "download_pretrained", lambda c, cache_dir=None: shutil.copy(
        tiny_weights, tmp_path / "fetched.pt"))
    assert OpenCLIPIndicator(model=TINY, weights="fake", cache_dir=str(tmp_path)).describe()["weights"] == "fake"
    shutil.copy(tiny_weights, tmp_path / "tiny-cached.pt")
    for weights in ("fake", None):
        ind = OpenCLIPIndicator(model=TINY, weights=weights, cache_dir=str(tmp_path))
        assert ind.describe()["weights"] == "fake"


def test_prompts_without_the_full_stop_are_another_text_embedding(tiny_weights, photo):
    imgs = as_batch(cv2.resize(photo, (64, 64)))
    printed = OpenCLIPIndicator(model=TINY, weights=str(tiny_weights))
    release = OpenCLIPIndicator(model=TINY, weights=str(tiny_weights), prompt_period=False)
    assert release.describe()["prompts"] == {"vqi": ["Good photo", "Bad photo"],
                                             "fii": ["manipulated face", "genuine face"]}
    assert printed.describe()["prompts"]["vqi"] == ["Good photo.", "Bad photo."]
    assert not np.allclose(printed.score(imgs)["fii"], release.score(imgs)["fii"])
    # a fitted file remembers the prompts: the other reading is a different backend
    assert build_indicator({"backend": "open_clip", "model": TINY, "weights": str(tiny_weights),
                            "prompt_period": False}).describe()["prompt_period"] is False


def test_images_at_the_model_size_skip_pil_with_the_same_numbers(tiny_weights, photo):
    """At the model's input size resize and crop are identities: the tensor path on the model's
    device gives exactly the PIL transform's numbers; other sizes take the PIL path."""
    from PIL import Image
    ind = OpenCLIPIndicator(model=TINY, weights=str(tiny_weights))
    for side in (64, 80):
        imgs = as_batch(cv2.resize(photo, (side, side)), cv2.resize(jpeg(photo, 10), (side, side)))
        pil = torch.stack([ind.preprocess(Image.fromarray(a)) for a in imgs.permute(0, 2, 3, 1).numpy()])
        assert torch.equal(ind.preprocess_batch(imgs), pil), side
