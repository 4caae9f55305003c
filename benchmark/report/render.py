"""Jinja2 environments and the two output formats (HTML autoescaped, LaTeX escaped on output).

The LaTeX environment uses ``\\VAR{...}`` / ``\\BLOCK{...}`` / ``\\#{...}`` delimiters (so TeX
braces and ``%`` stay literal) and passes every ``\\VAR`` through ``tex_escape`` (its
``finalize``): templates hold all markup, data is always plain text.
"""
from __future__ import annotations

import re
from pathlib import Path

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"
_TEX_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "–": "--", "—": "---", "×": r"$\times$",
    "·": ";", "±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$",
}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX_CHARS))


def tex_escape(value) -> str:
    return _TEX_RE.sub(lambda m: _TEX_CHARS[m.group(0)], "" if value is None else str(value))


def _loader():
    return jinja2.FileSystemLoader(str(TEMPLATES))


_HTML = jinja2.Environment(loader=_loader(), autoescape=True, trim_blocks=True,
                           lstrip_blocks=True, keep_trailing_newline=True,
                           undefined=jinja2.StrictUndefined)
_TEX = jinja2.Environment(
    loader=_loader(), autoescape=False, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True, undefined=jinja2.StrictUndefined, finalize=tex_escape,
    block_start_string=r"\BLOCK{", block_end_string="}",
    variable_start_string=r"\VAR{", variable_end_string="}",
    comment_start_string=r"\#{", comment_end_string="}")


def html_tables(tables) -> Markup:
    """The HTML fragment of a list of tables (safe to embed in report.html.j2)."""
    return Markup(_HTML.get_template("table.html.j2").render(tables=tables))


def html_page(title: str, warnings, notes, sections, details, has_ci: bool = False) -> str:
    """A complete, self-contained HTML page (inline CSS, no scripts, no network)."""
    return _HTML.get_template("report.html.j2").render(
        title=title, warnings=warnings, notes=notes, sections=sections, details=details,
        has_ci=has_ci)


def tex_tables(tables) -> str:
    return _TEX.get_template("table.tex.j2").render(tables=tables)
