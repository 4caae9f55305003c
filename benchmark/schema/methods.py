"""A ``methods.<name>`` entry's options are its class's constructor arguments: their names and
annotations say what is allowed, and building the method once says the rest.

``check_options(entry, cls, opts)``: every option is a constructor argument, and its value fits
the argument's annotation (``hidden: int`` refuses ``'abc'``, ``1.5`` and ``true``).
``dry_build(entry, cls, opts)``: the method built on the meta device (shapes only, no memory, no
initialisation cost), or on the CPU when a constructor computes with its tensors; whatever the
constructor refuses becomes one ``UserError`` naming the entry. The CLI does both for every
method a verb will use before any stage starts.
"""
from __future__ import annotations

import inspect
import types
import typing

import torch

from benchmark.errors import UserError


def signature(cls) -> dict[str, inspect.Parameter]:
    """The constructor arguments (without ``self`` and ``*args``/``**kwargs``)."""
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def annotations(cls) -> dict:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - an annotation that does not evaluate checks nothing
        return {}


def describe(hint) -> str:
    """``int | None`` -> 'int or null'."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    return True  # an annotation this check does not know (Any, a class): the constructor decides


def check_options(entry: str, cls, opts: dict) -> None:
    params, hints = signature(cls), annotations(cls)
    for key, value in opts.items():
        if key not in params:
            raise UserError(f"methods.{entry}.{key} is not an option of {cls.__name__}; it takes: "
                            f"{', '.join(params) or 'nothing'}")
        if key in hints and not fits(value, hints[key]):
            raise UserError(f"methods.{entry}.{key}={value!r} is not allowed: expected {describe(hints[key])} "
                            f"({cls.__name__} declares {key}: {describe(hints[key])})")


def dry_build(entry: str, cls, opts: dict):
    """``cls(**opts)`` on the meta device (CPU when the constructor needs real tensors)."""
    try:
        with torch.device("meta"):
            return cls(**opts)
    except UserError as e:
        raise _named(entry, e) from None
    except Exception:  # noqa: BLE001 - e.g. a constructor that reads a tensor's values: build for real
        pass
    try:
        return cls(**opts)
    except UserError as e:
        raise _named(entry, e) from None
    except Exception as e:  # noqa: BLE001 - whatever the constructor refuses is the user's option
        raise UserError(f"methods.{entry}: {cls.__name__} refused its options ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None


def check_input_size(entry: str, method, size: int) -> None:
    """The built ``method`` takes ``size``-px crops, or one line: its own check
    (``Method.check_input_size``), and any timm patch embedding built for one fixed side
    (``strict_img_size``: Swin, a ViT without ``dynamic_img_size``)."""
    try:
        method.check_input_size(int(size))
    except UserError as e:
        raise _named(entry, e) from None
    for module in method.modules():
        fixed = getattr(module, "img_size", None)
        if getattr(module, "strict_img_size", False) and fixed is not None and tuple(fixed) != (size, size):
            raise UserError(f"methods.{entry}: its backbone's {type(module).__name__} was built for {tuple(fixed)}-px "
                            f"input, got {size} px (extract.size); set its backbone_kwargs img_size: {size}")


def _named(entry: str, e: UserError) -> UserError:
    msg = str(e)
    return e if msg.startswith("methods.") else UserError(f"methods.{entry}: {msg}")
