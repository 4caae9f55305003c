"""The kinds of params key: what a value must be, how that is said, and values that break it.

A key is declared once (``benchmark.schema.sections``) as one of ``Int``, ``Float``, ``Bool``,
``Str``, ``Pattern``, ``Choice``, ``List`` or ``Dict``, with its default and a one-line doc. ``key.check(name,
value)`` raises a ``UserError`` naming the key, the value and what is allowed; ``key.allowed()``
says what is allowed in words (``python -m benchmark list params`` prints it); and
``key.bad_values()`` gives values that must be refused (the bad-input tests are generated from
them, so a key is covered the moment it is declared).

``choices`` may be a callable (a registry's names, read when a value is checked) so that a
method, dataset or distortion registered later is allowed without touching the declaration.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from benchmark.errors import UserError


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value).replace("True", "true").replace(
        "False", "false").replace("None", "null")


@dataclass(frozen=True)
class Key:
    default: Any
    doc: str
    nullable: bool = False  # null (None) is allowed too

    def check(self, name: str, value) -> None:
        if value is None and self.nullable:
            return
        problem = self.problem(value)
        if problem is not None:
            raise UserError(f"{name}={_show(value)} is not allowed ({problem}); expected {self.allowed()}")

    def problem(self, value) -> str | None:
        """Why ``value`` is refused, or None when it is fine (subclasses)."""
        raise NotImplementedError

    def allowed(self) -> str:
        text = self._allowed()
        return f"{text} or null" if self.nullable else text

    def _allowed(self) -> str:
        raise NotImplementedError

    def bad_values(self) -> list[tuple[str, str]]:
        """(what is wrong, a YAML value as typed on the command line) that ``check`` refuses."""
        return [("wrong type", "[1, 2]")]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


@dataclass(frozen=True)
class _Ranged(Key):
    min: float | None = None
    max: float | None = None
    above: float | None = None  # strictly greater than

    noun: ClassVar[str] = ""
    fits: ClassVar = None

    def problem(self, v):
        return f"not {self.noun}" if not self.fits(v) else self._range(v)

    def _allowed(self):
        return " ".join([self.noun, self._bounds()]).strip()

    def _range(self, v) -> str | None:
        if self.min is not None and v < self.min:
            return f"below {self.min}"
        if self.max is not None and v > self.max:
            return f"above {self.max}"
        if self.above is not None and not v > self.above:
            return f"not above {self.above}"
        return None

    def _bounds(self) -> str:
        parts = [f">= {self.min}" if self.min is not None else "", f"> {self.above}" if self.above is not None else "",
                 f"<= {self.max}" if self.max is not None else ""]
        return " and ".join(p for p in parts if p)

    def bad_values(self):
        out = [("wrong type", "abc")]
        low = self.min if self.min is not None else self.above
        if low is not None:
            out.append(("out of range", str(low - 1)))
        if self.max is not None:
            out.append(("out of range", str(self.max + 1)))
        return out


@dataclass(frozen=True)
class Int(_Ranged):
    noun: ClassVar[str] = "an integer"
    fits: ClassVar = staticmethod(_is_int)


@dataclass(frozen=True)
class Float(_Ranged):
    noun: ClassVar[str] = "a number"
    fits: ClassVar = staticmethod(_is_number)


@dataclass(frozen=True)
class Bool(Key):
    def problem(self, v):
        return None if isinstance(v, bool) else "not true or false"

    def _allowed(self):
        return "true or false"

    def bad_values(self):
        return [("wrong type", "maybe"), ("wrong type", "2")]


@dataclass(frozen=True)
class Str(Key):
    def problem(self, v):
        return None if isinstance(v, str) and v else "not a non-empty string"

    def _allowed(self):
        return "a non-empty string"

    def bad_values(self):
        return [("wrong type", "[a, b]")]


@dataclass(frozen=True)
class Pattern(Key):
    """A string matching ``regex`` (whole), ``shape`` says it in words (e.g. ``auto, cpu, cuda or cuda:N``)."""
    regex: str = ""
    shape: str = ""

    def problem(self, v):
        return None if isinstance(v, str) and re.fullmatch(self.regex, v) else "not " + self.shape

    def _allowed(self):
        return self.shape

    def bad_values(self):
        return [("unknown choice", "nope_not_a_choice"), ("wrong type", "[a, b]")]


@dataclass(frozen=True)
class Choice(Key):
    choices: tuple | Callable[[], list] = ()

    def options(self) -> list:
        return list(self.choices() if callable(self.choices) else self.choices)

    def problem(self, v):
        if isinstance(v, (list, dict)):
            return "not one value"
        return None if v in self.options() else "an unknown choice"

    def _allowed(self):
        return "one of " + ", ".join(map(_show, self.options()))

    def bad_values(self):
        return [("unknown choice", "nope_not_a_choice"), ("wrong type", "[a, b]")]


@dataclass(frozen=True)
class List(Key):
    item: Key | None = None  # every element is checked with it
    min_len: int = 0
    unique: bool = False

    def problem(self, v):
        if not isinstance(v, list):
            return "not a list"
        if len(v) < self.min_len:
            return f"fewer than {self.min_len} elements"
        if self.unique and len({_show(x) for x in v}) < len(v):
            return "repeated elements"
        for x in v:
            why = self.item.problem(x) if self.item is not None and not (x is None and self.item.nullable) else None
            if why is not None:
                return f"element {_show(x)}: {why}"
        return None

    def _allowed(self):
        what = f"a list, each element {self.item.allowed()}" if self.item is not None else "a list"
        return what + (f" (at least {self.min_len})" if self.min_len else "")

    def bad_values(self):
        out = [("wrong type", "abc")]
        if self.item is not None:
            out += [(f"element {what}", f"[{raw}]") for what, raw in self.item.bad_values() if not raw.startswith("[")]
        return out


@dataclass(frozen=True)
class Dict(Key):
    """A mapping passed on as is (an mmengine config, constructor options); ``fields`` are
    checked when present, other keys are allowed (the thing it builds checks them)."""
    fields: dict = field(default_factory=dict)
    required: tuple = ()

    def check(self, name: str, value) -> None:
        for field_name, key in self.fields.items():  # a bad field is named by its own dotted key
            if isinstance(value, dict) and field_name in value:
                key.check(f"{name}.{field_name}", value[field_name])
        super().check(name, value)

    def problem(self, v):
        if not isinstance(v, dict):
            return "not a mapping"
        for name in self.required:
            if name not in v:
                return f"{name} missing"
        for name, key in self.fields.items():
            if name in v and not (v[name] is None and key.nullable) and key.problem(v[name]) is not None:
                return f"{name} is {key.problem(v[name])}"
        return None

    def _allowed(self):
        return "a mapping" + (f" with {', '.join(self.fields)}" if self.fields else "") + (
            f" ({', '.join(self.required)} required)" if self.required else "")

    def bad_values(self):
        return [("wrong type", "abc")]
