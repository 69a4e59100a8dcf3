"""`dropdoc report INPUT... -o report.html|report.md`: a diagnosis and/or a history as a
self-contained HTML page or GitHub-flavoured Markdown for a ticket."""

from __future__ import annotations

import os

import click

from ..cli import friendly_errors

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}


def output_format(output: str, fmt: str | None) -> str:
    """--format wins; otherwise the extension of -o; stdout defaults to Markdown."""
    if fmt:
        return fmt
    if output == "-":
        return "markdown"
    extension = os.path.splitext(output)[1].lower()
    if extension not in FORMATS:
        raise click.UsageError(f"cannot tell the format from {output!r}: name it .html or .md, or pass --format")
    return FORMATS[extension]


@click.command("report")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("-o", "--output", default="-", show_default=True,
              help="report file (.html or .md); - writes to stdout")
@click.option("--format", "fmt", type=click.Choice(["html", "markdown"]),
              help="output format [default: from the -o extension; Markdown on stdout]")
@click.option("--since", help="history only: the last DURATION (e.g. 90s, 15m, 24h, 7d)")
@click.option("--top", default=4, show_default=True, type=click.IntRange(0, 27),
              help="history: findings that get a chart of their own")
@click.option("--title", help="report title [default: dropdoc report: HOST]")
@click.option("--tz", "zone", default="local", show_default=True,
              help="time zone of the times shown: local (this machine's), UTC, an IANA name "
                   "(Europe/Paris) or an offset (+05:30)")
@friendly_errors
def command(inputs: tuple[str, ...], output: str, fmt: str | None, since: str | None, top: int,
            title: str | None, zone: str) -> None:
    """Render diagnoses (`dropdoc diagnose --format json`, `lab run --format json`, bundles)
    and histories (`dropdoc watch --record`) as one HTML or Markdown report.

    The kind of each INPUT is recognised by its content; several inputs make one report
    (e.g. a diagnosis with the history around it). Inputs from different hosts or
    namespaces each keep their own section: the report says so and adds nothing up."""
    import time

    from ..history import parse_duration
    from ..render import report_inputs, zones
    from ..render.output import write_text

    kind = output_format(output, fmt)
    tz = zones.resolve(zone)
    since_ts = time.time() - parse_duration(since) if since else None
    loaded = [item for path in inputs for item in report_inputs.load(path, since_ts)]
    if kind == "html":
        from ..render.html import render
    else:
        from ..render.markdown import render
    text = render(loaded, top=top, title=title, tz=tz)
    write_text(output, text)
    if output != "-":
        diagnoses = sum(isinstance(i, report_inputs.DiagnosisInput) for i in loaded)
        histories = len(loaded) - diagnoses
        click.echo(f"dropdoc: wrote {output} ({kind}; {diagnoses} diagnosis(es), {histories} history(ies))", err=True)
