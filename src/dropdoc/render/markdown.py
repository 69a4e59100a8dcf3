"""GitHub-flavoured Markdown report, for pasting into a ticket: the same content as the
HTML report, pure text, charts replaced by a compact table of peaks per time bucket.

Every value from the input goes through `escape` (jinja2's finalize hook, so a template
cannot forget it): a process called `<script>` or `*bold*|x` stays literal text and cannot
break a table. Code spans pick a backtick fence longer than any run inside the value.
"""

from __future__ import annotations

import re
from datetime import tzinfo
from functools import lru_cache
from typing import Any

from .. import __version__
from . import report_model
from .report_inputs import DiagnosisInput, ReportInput
from .visible import visible

# What can open inline markup anywhere in a line: code spans, emphasis, links, table cells,
# strikethrough, raw HTML and autolinks (a "<" before a letter, "/", "!" or "?"), and a
# backslash that would escape the next character. Everything else (">", "#", "!", "]",
# a lone "\" before a letter ...) is left as it is, so the raw Markdown stays readable.
_SPECIAL = re.compile(r"[`*\[|~_]|\\(?=[!-/:-@\[-`{-~]|$)|<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?[0-9A-Za-z]+;)")
# What would start a block at the beginning of a line: a list item ("- ", "+ ", "1. ",
# "1) "), a thematic break or a setext heading underline ("---", "==="), a heading ("# "),
# a block quote (">").
_BLOCK_START = re.compile(r"^(?:[-+](?=\s|$)|[-=][-= ]*$|\d{1,9}(?=[.)](?:\s|$))|#{1,6}(?=\s|$)|>)")
# A run of "#" standing alone at the end closes an ATX heading (when it ends the line).
_CLOSING_HASHES = re.compile(r"(?:(?<=\s)|^)(?=#+ ?$)")


class Safe(str):
    """Markdown already escaped by this module: finalize lets it through."""


def one_line(value: Any) -> str:
    """Newlines and runs of blanks as one space (a value never starts a new block), and
    bidirectional and control characters shown as what they are."""
    return visible(re.sub(r"\s+", " ", str(value)))


def escape(value: Any) -> str:
    """Plain text that renders as itself in GFM - in a paragraph, a heading, a list item
    or a table cell - with as few backslashes as that takes."""
    if isinstance(value, Safe):
        return value
    plain_text = one_line(value)
    text = _SPECIAL.sub(lambda m: _escaped(plain_text, m), plain_text)
    text = _ENTITY.sub(r"\\&", text)
    text = _CLOSING_HASHES.sub(r"\\", text)
    match = _BLOCK_START.match(text.lstrip(" "))
    if match and not text.lstrip(" ").startswith("\\"):
        stripped = text.lstrip(" ")
        end = match.end() if stripped[0].isdigit() else 0
        text = stripped[:end] + "\\" + stripped[end:]
    return text


def _escaped(text: str, match: re.Match) -> str:
    # An underscore between two letters or digits (tcp.listen_overflow) can neither open
    # nor close emphasis in CommonMark: left as it is, identifiers stay readable raw.
    char, at = match.group(0), match.start()
    if char == "_" and 0 < at < len(text) - 1 and text[at - 1].isalnum() and text[at + 1].isalnum():
        return char
    return "\\" + char


def code(value: Any, cell: bool = False) -> Safe:
    """An inline code span holding `value` literally (in a table cell, | is escaped: GFM
    splits cells before it parses code spans)."""
    text = one_line(value).strip()
    if not text:
        return Safe("")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    if cell:
        text = text.replace("|", "\\|")
    return Safe(f"{fence}{pad}{text}{pad}{fence}")


def _finalize(value: Any) -> Any:
    if value is None:
        return report_model.NA
    return value if isinstance(value, Safe) else escape(value)


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("dropdoc.render", "templates"),
                             autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             finalize=_finalize, undefined=jinja2.StrictUndefined)
    env.filters["code"] = code
    env.filters["cellcode"] = lambda value: code(value, cell=True)
    env.filters["bold"] = lambda value: Safe(f"**{escape(value)}**") if one_line(value) else Safe("")
    return env


def render_model(report: dict[str, Any]) -> str:
    text = _environment().get_template("report.md.j2").render(report=report, version=__version__)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render(inputs: list[ReportInput], top: int = 4, title: str | None = None, tz: tzinfo | None = None) -> str:
    """The Markdown report for the inputs; times in `tz` (UTC when None)."""
    return render_model(report_model.build(inputs, top=top, title=title, charts=False, table=True, tz=tz))


def render_diagnosis(document: dict[str, Any], source: str = "dropdoc diagnose") -> str:
    """`dropdoc diagnose --format markdown`."""
    return render([DiagnosisInput("Diagnosis", document, source)])
