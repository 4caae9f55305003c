"""The ``open_clip`` indicator backend: VQI and FII as the paper defines them (§3.1-3.2).

For an image embedding v and the text embeddings t_1, t_2 of a prompt pair, Eq. (1) is

    s_i = cos(v, t_i),        q = exp(a s_1) / (exp(a s_1) + exp(a s_2)),

a softmax over the two cosine similarities (the printed ``exp(s_1 + s_2)`` denominator is a
typo). ``prompt_period`` (true, the paper's text) keeps the prompts' trailing full stop; false
drops it ("Good photo", ..., as the authors' release writes them).  ``a = 1`` by default (``logit_scale: false``: unscaled, which matches the paper's
figure ranges, scores near 50 %); ``logit_scale: true`` uses CLIP's learnt scale
``a = exp(model.logit_scale)``.  VQI uses ["Good photo.", "Bad photo."] (q = P(good));
FII uses ["manipulated face.", "genuine face."] (q = P(manipulated)).

``weights`` is one of

* a local checkpoint file (loaded by open_clip itself, ``weights_only=True``);
* an open_clip pretrained tag (e.g. ``openai``, ``laion2b_s34b_b79k``): taken from the Hugging
  Face or open_clip cache (``cache_dir``, default ones otherwise) when it is there, else fetched
  by open_clip's own download logic (``open_clip.download_pretrained``: the Hugging Face hub or
  the tag's URL, into those caches); offline with nothing cached, a one-line error names the
  file and where to put it;
* null: the first *cached* tag of the model (``openai`` first); nothing is downloaded, so
  ``backend: auto`` stays offline;
* ``random``: random initialisation -- for tests and timing only, never chosen by ``auto``.

Anything else that cannot be loaded raises a one-line ``UserError``.  Images are
preprocessed with the model's own evaluation transform (resize, centre crop, normalise) on the
CPU with PIL, except where the images already have the model's input size: then resize and
crop are identities and the same arithmetic (``/255``, minus mean, over std) runs as tensor ops
on the model's ``device`` (the same numbers, without a trip through PIL).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.errors import UserError
from benchmark.registry import INDICATORS

PROMPTS = {"vqi": ("Good photo.", "Bad photo."), "fii": ("manipulated face.", "genuine face.")}
RANDOM = "random"


def prompts(period: bool = True) -> dict[str, tuple[str, str]]:
    """The prompt pairs, with (paper) or without (release) their trailing full stop."""
    return {k: tuple(t if period else t.rstrip(".") for t in pair) for k, pair in PROMPTS.items()}


def two_prompt_softmax(image_emb: torch.Tensor, text_emb: torch.Tensor,
                       scale: float = 1.0) -> torch.Tensor:
    """Eq. (1): P(first prompt) for each image; ``image_emb`` (N, D), ``text_emb`` (2, D)."""
    s = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
    return torch.softmax(scale * s, dim=-1)[:, 0]


def _cached_tag_file(model: str, tag: str, cache_dir: str | None) -> str | None:
    """The cached checkpoint of an open_clip pretrained tag, or None; never downloads."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        return None
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub ships with open_clip
            try_to_load_from_cache = None
        repo, fname = os.path.split(cfg["hf_hub"])  # "org/model/" or "org/model/file.bin"
        fname = fname or "open_clip_pytorch_model.bin"
        names = [fname[:-4] + ".safetensors"] if fname.endswith((".bin", ".pth")) else []
        if fname == "open_clip_pytorch_model.bin":
            names = ["open_clip_model.safetensors"]
        names.append(fname)
        for name in names if try_to_load_from_cache else []:
            p = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(p, str) and os.path.isfile(p):
                return p
    if cfg.get("url"):
        p = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        if os.path.isfile(p):
            return p
    return None


def _download(model: str, tag: str, cfg: dict, cache_dir: str | None) -> str:
    """open_clip's own download of a pretrained tag into its cache, or a one-line UserError."""
    import open_clip
    path, why = "", "the download gave no file"
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - offline, no hub access, a failed checksum: all one line
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    if path and os.path.isfile(path):
        return path
    if cfg.get("hf_hub"):
        repo, fname = os.path.split(cfg["hf_hub"])
        where = (f"`{fname or 'open_clip_pytorch_model.bin'}` of the Hugging Face repo {repo} into the hub "
                 f"cache (HF_HOME, e.g. `huggingface-cli download {repo} {fname or 'open_clip_pytorch_model.bin'}`)")
    else:
        where = f"{cfg.get('url', '?')} into {cache_dir or os.path.expanduser('~/.cache/clip')}"
    raise UserError(f"open_clip weights {model}/{tag} are not in the local cache and could not be downloaded "
                    f"({why}); put {where}, or set indicators.weights to a local checkpoint file")


def resolve_weights(model: str, weights, cache_dir: str | None = None):
    """``(checkpoint_path | None, tag | None)`` for ``weights``, or a UserError saying what to do."""
    import open_clip

    if model not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {model!r}; set indicators.model to one of "
                        f"open_clip.list_models() (e.g. ViT-B-32)")
    if weights is not None and str(weights) == RANDOM:
        return None, None
    if weights is None or str(weights).lower() in ("", "none", "null"):
        tags = sorted(open_clip.list_pretrained_tags_by_model(model), key=lambda t: t != "openai")
        for tag in tags:
            path = _cached_tag_file(model, tag, cache_dir)
            if path:
                return path, tag
        raise UserError(f"no open_clip weights for {model} in the local cache and indicators.weights "
                        f"is null; set indicators.weights to a local checkpoint file, or use "
                        f"indicators.backend=fallback (or auto)")
    weights = str(weights)
    if os.path.isfile(weights):
        return weights, None
    cfg = open_clip.get_pretrained_cfg(model, weights)
    if cfg:
        path = _cached_tag_file(model, weights, cache_dir)
        return (path or _download(model, weights, cfg, cache_dir)), weights
    raise UserError(f"open_clip weights file {weights} not found (model {model}); set "
                    f"indicators.weights to an existing checkpoint file, or use "
                    f"indicators.backend=fallback (or auto)")


def _identity_resize_normalise(preprocess, hw) -> tuple[tuple, tuple] | None:
    """(mean, std) when ``preprocess`` is Resize(s) + CenterCrop(s) + convert + ToTensor + Normalize
    and the images are s x s (open_clip's evaluation transform at its input size), else None."""
    from torchvision import transforms as T
    steps = list(getattr(preprocess, "transforms", []))
    kinds = [type(t).__name__ for t in steps]
    if kinds != ["Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "Normalize"]:
        return None
    resize, crop, norm = steps[0], steps[1], steps[4]
    side = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    if not isinstance(norm, T.Normalize) or side is None or tuple(crop.size) != (side, side) \
            or tuple(int(x) for x in hw) != (side, side):
        return None
    return tuple(float(m) for m in norm.mean), tuple(float(v) for v in norm.std)


@INDICATORS.register_module(name="open_clip")
class OpenCLIPIndicator:
    """VQI and FII from an open_clip model (see the module docstring)."""

    name = "open_clip"

    def __init__(self, model: str = "ViT-B-32", weights=None, logit_scale: bool = False,
                 device: str = "cpu", batch_size: int = 64, cache_dir: str | None = None,
                 prompt_period: bool = True, **_ignored):
        import open_clip

        self.model_name, self.use_logit_scale = model, bool(logit_scale)
        self.prompt_period = bool(prompt_period)
        self.prompts = prompts(self.prompt_period)
        self.device, self.batch_size = torch.device(device), int(batch_size)
        path, tag = resolve_weights(model, weights, cache_dir)
        self.weights = RANDOM if path is None else (tag or str(Path(path).resolve()))
        kw = {}
        if tag:  # a tag's own preprocessing and activation, as open_clip would use for it
            cfg = open_clip.get_pretrained_cfg(model, tag)
            kw = {k: cfg[c] for k, c in (("image_mean", "mean"), ("image_std", "std"),
                                         ("image_interpolation", "interpolation"),
                                         ("image_resize_mode", "resize_mode")) if cfg.get(c)}
            kw["force_quick_gelu"] = bool(cfg.get("quick_gelu", False))
        try:
            net, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=path, pretrained_image=False, pretrained_text=False,
                device=self.device, weights_only=True, **kw)
        except Exception as e:  # noqa: BLE001 - any loader failure is a bad weights file
            raise UserError(f"open_clip weights {path} could not be loaded into {model} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); pass a "
                            f"checkpoint of that model, or use indicators.backend=fallback") from e
        self.model = net.eval()
        tokenizer = open_clip.get_tokenizer(model)
        with torch.no_grad():
            self.text = {k: self.model.encode_text(tokenizer(list(p)).to(self.device)).float()
                         for k, p in self.prompts.items()}
        self.scale = float(self.model.logit_scale.detach().exp()) if self.use_logit_scale else 1.0

    def preprocess_batch(self, images: torch.Tensor) -> torch.Tensor:
        """The model's own evaluation transform applied to each RGB uint8 image (on ``device``)."""
        fast = _identity_resize_normalise(self.preprocess, images.shape[-2:])
        if fast is not None:  # resize and crop are identities: the same arithmetic as tensor ops
            mean, std = (torch.tensor(v, device=self.device).view(1, 3, 1, 1) for v in fast)
            return images.to(self.device).float().div(255).sub_(mean).div_(std)
        arr = images.permute(0, 2, 3, 1).cpu().numpy()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny per-image tensor ops: OpenMP hand-offs cost more
        try:
            return torch.stack([self.preprocess(Image.fromarray(a)) for a in arr])
        finally:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        out = [self.model.encode_image(self.preprocess_batch(images[i:i + self.batch_size])
                                       .to(self.device)).float()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.text["vqi"].shape[1])

    def score(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError("indicator backends expect an RGB uint8 tensor (N, 3, H, W)")
        v = self.embed(images)
        return {k: two_prompt_softmax(v, t, self.scale).double().cpu().numpy()
                for k, t in self.text.items()}

    def describe(self) -> dict:
        return {"backend": "open_clip", "model": self.model_name, "weights": self.weights,
                "logit_scale": self.use_logit_scale, "logit_scale_value": self.scale,
                "prompt_period": self.prompt_period, "prompts": {k: list(v) for k, v in self.prompts.items()}}
