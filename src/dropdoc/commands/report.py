"""`dropdoc report INPUT... -o report.html|report.md`: a diagnosis and/or a history as a
self-contained HTML page or GitHub-flavoured Markdown for a ticket."""

from __future__ import annotations

import os
import sys
import tempfile

import click

from ..cli import friendly_errors
from ..errors import DropdocError

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}


class ReportOutputError(DropdocError):
    """The report could not be written."""


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


def write_atomically(path: str, text: str) -> None:
    """Write next to the target and rename: a failed run never leaves half a report."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=".dropdoc-report-", dir=directory)
    except OSError as exc:
        raise ReportOutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise ReportOutputError(f"cannot write {path}: {exc.strerror or exc}") from None


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
@friendly_errors
def command(inputs: tuple[str, ...], output: str, fmt: str | None, since: str | None, top: int,
            title: str | None) -> None:
    """Render diagnoses (`dropdoc diagnose --format json`, `lab run --format json`, bundles)
    and histories (`dropdoc watch --record`) as one HTML or Markdown report.

    The kind of each INPUT is recognised by its content; several inputs make one report
    (e.g. a diagnosis with the history around it)."""
    import time

    from ..history import parse_duration
    from ..render import report_inputs

    kind = output_format(output, fmt)
    since_ts = time.time() - parse_duration(since) if since else None
    loaded = [item for path in inputs for item in report_inputs.load(path, since_ts)]
    if kind == "html":
        from ..render.html import render
    else:
        from ..render.markdown import render
    text = render(loaded, top=top, title=title)
    if output == "-":
        sys.stdout.write(text)
        return
    write_atomically(output, text)
    diagnoses = sum(isinstance(i, report_inputs.DiagnosisInput) for i in loaded)
    histories = len(loaded) - diagnoses
    click.echo(f"dropdoc: wrote {output} ({kind}; {diagnoses} diagnosis(es), {histories} history(ies))", err=True)
