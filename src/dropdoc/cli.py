"""The dropdoc command line: a thin layer over the library.

Errors the user can act on (DropdocError) are printed as one line; exit codes follow
DESIGN.md: 0 healthy, 1 warnings, 2 critical, 3 could not measure.
"""

from __future__ import annotations

import functools
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .errors import DropdocError
from .model import EXIT_NOT_MEASURED
from .render import json_out, text

err_console = Console(stderr=True)


def friendly_errors(func: Callable) -> Callable:
    """One line instead of a traceback for every error a user can cause."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DropdocError as exc:
            click.echo(f"dropdoc: {exc}", err=True)
            sys.exit(EXIT_NOT_MEASURED)
        except KeyboardInterrupt:
            click.echo("dropdoc: interrupted", err=True)
            sys.exit(130)
    return wrapper


def _terminate_as_exit(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


@contextmanager
def progress_bar(label: str, total: float, enabled: bool) -> Iterator[Callable[[float], None] | None]:
    """A progress bar on stderr while measuring (only on a terminal)."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda elapsed: progress.update(task, completed=elapsed)


@click.group()
@click.version_option(package_name="dropdoc")
def main() -> None:
    """dropdoc: where in the stack do packets die, why, and what to change."""


@main.command()
@click.option("--netns", help="network namespace name (as in `ip netns list`)")
@click.option("--duration", default=5.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="measurement window in seconds")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--from", "bundle", type=click.Path(dir_okay=False),
              help="diagnose a bundle written by `dropdoc collect -o` instead of this system")
@friendly_errors
def diagnose(netns: str | None, duration: float, fmt: str, bundle: str | None) -> None:
    """Measure for a window and report ranked findings with evidence and fixes."""
    from .diagnose import diagnose as run_diagnosis, diagnose_bundle

    if bundle:
        if netns:
            raise click.UsageError("--from reads a bundle; --netns applies only to live measurement")
        result = diagnose_bundle(bundle)
    else:
        with progress_bar(f"measuring {duration:g} s", duration, fmt == "text") as tick:
            result = run_diagnosis(netns, duration, on_tick=tick)
    if fmt == "json":
        click.echo(json_out.dumps(result.to_dict()))
    else:
        text.render(result, Console())
    sys.exit(result.exit_code())


@main.command()
@click.option("--netns", help="network namespace name")
@click.option("--root", default="/", show_default=True, type=click.Path(exists=True, file_okay=False),
              help="read a copied proc/ and sys/ tree instead of the live system")
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="write a bundle (.tar.gz): two snapshots over --duration with their raw files")
@click.option("--duration", default=5.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="window between the two snapshots of a bundle")
@friendly_errors
def collect(netns: str | None, root: str, fmt: str, output: str | None, duration: float) -> None:  # noqa: ARG001
    """One snapshot of every source as JSON, or with -o a bundle for later diagnosis."""
    if output:
        from .bundle import write_bundle
        from .diagnose import diagnosis_from_window
        from .window import measure

        if root != "/":
            raise click.UsageError("-o measures the live system; --root reads a copied tree")
        with progress_bar(f"collecting {duration:g} s", duration, True) as tick:
            window = measure(netns, duration, on_tick=tick, record=True)
        write_bundle(window, output, diagnosis_from_window(window).to_dict())
        click.echo(f"dropdoc: wrote {output} ({window.seconds:.1f} s window); "
                   f"diagnose it anywhere with: dropdoc diagnose --from {output}", err=True)
        return
    from .snapshot import take_snapshot

    snapshot = take_snapshot(netns, root=root)
    click.echo(json_out.dumps(snapshot.to_dict()))


@main.group()
def lab() -> None:
    """Reproducible fault scenarios in network namespaces."""


@lab.command("list")
def lab_list() -> None:
    """Show the scenarios."""
    from .lab.model import all_scenarios

    for scenario in all_scenarios().values():
        expected = scenario.expected_finding or "no finding (control)"
        click.echo(f"{scenario.name:18} -> {expected}\n{'':18}    {scenario.description}")


@lab.command("run")
@click.argument("name")
@click.option("--fix", is_flag=True, help="apply the proposed fixes in the lab, restart the server, re-measure")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@friendly_errors
def lab_run(name: str, fix: bool, fmt: str) -> None:
    """Build scenario NAME, load it, diagnose it (and with --fix: fix and verify)."""
    from .lab import scenarios

    scenario = scenarios.get(name)
    signal.signal(signal.SIGTERM, _terminate_as_exit)
    console = Console()
    phase = (lambda msg: err_console.print(f"[dim]lab:[/dim] {msg}")) if fmt == "text" else None
    with progress_bar("measuring", scenario.window, fmt == "text") as tick:
        result = scenarios.run(name, fix=fix, on_phase=phase, on_tick=tick)
    if fmt == "json":
        click.echo(json_out.dumps(result.to_dict()))
    else:
        text.render_lab(result, console)
    sys.exit(text.lab_exit_code(result))


if __name__ == "__main__":
    main()
