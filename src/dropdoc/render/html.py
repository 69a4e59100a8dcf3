"""A self-contained HTML report: inline CSS and inline SVG charts, no script, no external
URL - it opens offline, mails as one file and prints cleanly.

Everything taken from the input is escaped by jinja2's autoescape; the only markup let
through unescaped is the SVG that charts.py builds (which escapes its own text).
"""

from __future__ import annotations

from datetime import tzinfo
from functools import lru_cache
from typing import Any

from markupsafe import Markup

from .. import __version__
from ..rules.engine import LAYERS
from . import report_model
from .charts import MUTED, PALETTE, line_chart_svg
from .report_inputs import DiagnosisInput, ReportInput
from .visible import visible

# One colour per layer in every chart of a report (Okabe-Ito order, from the wire up).
LAYER_COLORS = {layer: PALETTE[index] for index, layer in enumerate((*LAYERS, "unknown"))}


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("dropdoc.render", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, finalize=_finalize)


def _finalize(value: Any) -> Any:
    """Input text with its bidirectional and control characters shown (then escaped)."""
    return visible(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def _history_charts(section: dict[str, Any], tz: tzinfo) -> dict[str, Any]:
    if section.get("empty"):
        return {"layers": "", "findings": []}
    layers = line_chart_svg(section["layer_series"], "Drop rate per layer", "drops/s",
                            width=1000, height=280, colors=LAYER_COLORS, tz=tz)
    findings = [line_chart_svg(chart["series"], f"{chart['finding']} ({chart['layer']})", f"{chart['unit']}/s",
                               width=500, height=220, tz=tz, colors=_finding_colors(chart))
                for chart in section["finding_charts"]]
    return {"layers": Markup(layers), "findings": [Markup(svg) for svg in findings]}


def _finding_colors(chart: dict[str, Any]) -> dict[str, str]:
    """The layer's colour for the finding (or its highest rate), grey for its mean."""
    main, *rest = chart["series"]
    return {main: LAYER_COLORS.get(chart["layer"], PALETTE[0]), **{name: MUTED for name in rest}}


def render_model(report: dict[str, Any]) -> str:
    for section in report["sections"]:
        if section["kind"] == "history":
            section["svg"] = _history_charts(section, report["tz"])
    return _environment().get_template("report.html.j2").render(report=report, version=__version__)


def render(inputs: list[ReportInput], top: int = 4, title: str | None = None, tz: tzinfo | None = None) -> str:
    """The HTML page for the inputs (diagnoses and histories, in the order given); times
    in `tz` (UTC when None)."""
    return render_model(report_model.build(inputs, top=top, title=title, charts=True, table=False, tz=tz))


def render_diagnosis(document: dict[str, Any], source: str = "dropdoc diagnose") -> str:
    """`dropdoc diagnose --format html`: one diagnosis document as a page."""
    return render([DiagnosisInput("Diagnosis", document, source)])
