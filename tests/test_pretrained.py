"""Pretrained weights the timm and open_clip way (benchmark/backbones.py, indicators/clip.py).

A local file goes through ``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(
file=path))`` (``weights_only``); a wrong file is one line naming it and what was expected;
``pretrained: true`` and an open_clip tag fetch through the libraries' own hub logic, and offline
with nothing cached one line says which file to put where. Nothing here touches the network: the
offline cases run with the Hugging Face hub in offline mode and an empty cache.
"""
from __future__ import annotations

import dataclasses

import benchmark  # noqa: F401  (torchvision shim)
import pytest
import timm
import torch

from benchmark.backbones import backbone_weights, create_backbone, input_stats
from benchmark.errors import UserError


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _saved(tmp_path, name="test_resnet", **kwargs):
    torch.manual_seed(1)
    src = timm.create_model(name, **kwargs)
    path = tmp_path / f"{name}.pth"
    torch.save(src.state_dict(), path)
    return src, path


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"features_only": True}, {"num_classes": 0, "global_pool": ""}])
def test_a_local_file_loads_the_timm_way(tmp_path, kwargs):
    src, path = _saved(tmp_path)
    model = create_backbone("test_resnet", str(path), **kwargs)
    assert backbone_weights(model) == "test_resnet.pth"
    ref = dict(src.state_dict())
    got = model.state_dict()
    assert got and all(torch.equal(v, ref[k]) for k, v in got.items() if k in ref)
    assert sum(k in ref for k in got) >= len(got) - 2  # all but a dropped head


def test_random_init_is_the_default():
    torch.manual_seed(0)
    a = create_backbone("test_resnet", None, num_classes=0)
    torch.manual_seed(0)
    b = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    assert backbone_weights(a) == "random init"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_file_of_another_model_is_one_line(tmp_path):
    _, path = _saved(tmp_path, "test_vit")
    with pytest.raises(UserError, match=r"test_vit\.pth do not fit timm test_resnet: its tensors supply only 0\.\d% of the parameters"):
        create_backbone("test_resnet", str(path), num_classes=0)  # timm alone would load it non-strictly


@dataclasses.dataclass
class _NotWeights:
    w: int = 1


def test_a_pickle_weights_only_refuses_and_a_broken_file_are_one_line(tmp_path):
    torch.save({"model": _NotWeights()}, tmp_path / "obj.pth")
    with pytest.raises(UserError, match=r"obj\.pth: torch.load with weights_only=True refuses it"):
        create_backbone("test_resnet", str(tmp_path / "obj.pth"), num_classes=0)
    _, path = _saved(tmp_path)
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match=r"cut\.pth cannot be read by torch.load"):
        create_backbone("test_resnet", str(tmp_path / "cut.pth"), num_classes=0)
    with pytest.raises(UserError, match="not found; give a local"):
        create_backbone("test_resnet", str(tmp_path / "missing.pth"))


def test_pretrained_true_offline_says_which_file_to_put_where(offline_hub):
    with pytest.raises(UserError) as e:
        create_backbone("test_resnet", True, num_classes=0)
    msg = str(e.value)
    assert "\n" not in msg
    assert "`model.safetensors` of the Hugging Face repo timm/test_resnet.r160_in1k" in msg
    assert "huggingface-cli download timm/test_resnet.r160_in1k model.safetensors" in msg


def test_pretrained_true_uses_timms_cache(offline_hub):
    """What timm's hub logic finds in its cache is what the backbone gets (no network needed)."""
    from huggingface_hub import constants
    from safetensors.torch import save_file
    torch.manual_seed(2)
    src = timm.create_model("test_resnet")
    snap = offline_hub / "hf" / "models--timm--test_resnet.r160_in1k"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("0" * 40)
    (snap / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(src.state_dict(), str(snap / "snapshots" / ("0" * 40) / "model.safetensors"))
    assert constants.HF_HUB_CACHE == str(offline_hub / "hf")
    model = create_backbone("test_resnet", True, num_classes=0)
    assert backbone_weights(model) == "timm timm/test_resnet.r160_in1k"
    ref = src.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())  # all but the dropped head


def test_input_statistics_come_from_the_backbone():
    assert input_stats(timm.create_model("legacy_xception", pretrained=False)) == ((0.5,) * 3, (0.5,) * 3)
    assert input_stats(timm.create_model("resnet10t", pretrained=False))[0] == pytest.approx((0.485, 0.456, 0.406))
