"""Griffe extension: render coba-rl's docstrings as Markdown in the API reference.

The library's docstrings follow the Google layout with a few reStructuredText habits
(``.. math::`` blocks, ``:func:`name``` roles, an ``Example:`` heading, bare doctests).
This extension rewrites those into what mkdocstrings renders well, before Griffe parses
the docstring. The source docstrings are not changed; they stay valid for ``help()`` and
for the doctests.

Used by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`~?([^`]+)`")
_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _math_blocks(lines: list[str]) -> list[str]:
    """``.. math::`` plus an indented body becomes a ``$$ ... $$`` display block."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == ".. math::":
            base = _indent(line)
            body: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            text = [b.strip() for b in body if b.strip()]
            pad = " " * base
            out.extend([f"{pad}$$", *(pad + t for t in text), f"{pad}$$", ""])
            continue
        out.append(line)
        i += 1
    return out


def _doctest_sections(lines: list[str]) -> list[str]:
    """``Example:`` becomes ``Examples:``; a bare doctest paragraph gets that heading."""
    out: list[str] = []
    state = "text"  # "text", "section" (an Examples heading) or "bare" (a doctest paragraph)
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m and state != "bare":
            state = "section" if m.group(2) in ("Example", "Examples") else "text"
            out.append(f"{m.group(1)}Examples:" if m.group(2) == "Example" else line)
            continue
        top_level = bool(line.strip()) and _indent(line) == 0
        if state == "section" and top_level:
            state = "text"
        if state == "bare" and not line.strip():
            state = "text"
        paragraph_start = i == 0 or not lines[i - 1].strip()
        if state == "text" and top_level and line.startswith(">>>") and paragraph_start:
            out.append("Examples:")
            state = "bare"
        out.append("    " + line if state == "bare" else line)
    return out


def rewrite(text: str) -> str:
    """The Markdown-friendly form of one docstring.

    Example:
      >>> print(rewrite("Sum.\\n\\n.. math::\\n\\n    a + b\\n\\nSee :func:`f`."))
      Sum.
      <BLANKLINE>
      $$
      a + b
      $$
      <BLANKLINE>
      See `f`.
    """
    text = _ROLE.sub(r"`\1`", text)
    lines = _math_blocks(text.splitlines())
    return "\n".join(_doctest_sections(lines))


class MarkdownDocstrings(griffe.Extension):
    """Rewrite each object's docstring once, when Griffe creates the object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
