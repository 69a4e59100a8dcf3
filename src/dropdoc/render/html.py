"""A self-contained HTML report: inline CSS and inline SVG charts, no script, no external
URL - it opens offline, mails as one file and prints cleanly.

Everything taken from the input is escaped by jinja2's autoescape; the only markup let
through unescaped is the SVG that charts.py builds (which escapes its own text).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from markupsafe import Markup

from .. import __version__
from ..rules.engine import LAYERS
from . import report_model
from .charts import PALETTE, line_chart_svg
from .report_inputs import DiagnosisInput, ReportInput

# One colour per layer in every chart of a report (Okabe-Ito order, from the wire up).
LAYER_COLORS = {layer: PALETTE[index] for index, layer in enumerate((*LAYERS, "unknown"))}


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("dropdoc.render", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


def _history_charts(section: dict[str, Any]) -> dict[str, Any]:
    if section.get("empty"):
        return {"layers": "", "findings": []}
    layers = line_chart_svg(section["layer_series"], "Drop rate per layer", "drops/s",
                            width=1000, height=280, colors=LAYER_COLORS)
    findings = [line_chart_svg({chart["finding"]: chart["series"]},
                               f"{chart['finding']} ({chart['layer']})", f"{chart['unit']}/s",
                               width=500, height=220, colors={chart["finding"]: LAYER_COLORS.get(chart["layer"], PALETTE[0])})
                for chart in section["finding_charts"]]
    return {"layers": Markup(layers), "findings": [Markup(svg) for svg in findings]}


def render_model(report: dict[str, Any]) -> str:
    for section in report["sections"]:
        if section["kind"] == "history":
            section["svg"] = _history_charts(section)
    return _environment().get_template("report.html.j2").render(report=report, version=__version__)


def render(inputs: list[ReportInput], top: int = 4, title: str | None = None) -> str:
    """The HTML page for the inputs (diagnoses and histories, in the order given)."""
    return render_model(report_model.build(inputs, top=top, title=title, charts=True, table=False))


def render_diagnosis(document: dict[str, Any], source: str = "dropdoc diagnose") -> str:
    """`dropdoc diagnose --format html`: one diagnosis document as a page."""
    return render([DiagnosisInput("Diagnosis", document, source)])
