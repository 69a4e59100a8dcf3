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
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown", "html"]), default="text",
              show_default=True, help="markdown/html: the report of `dropdoc report` for this diagnosis")
@click.option("--from", "bundle", type=click.Path(dir_okay=False),
              help="diagnose a bundle written by `dropdoc collect -o` instead of this system")
@click.option("--trace/--no-trace", "trace", default=None,
              help="trace kfree_skb drop reasons during the window [default: on when root]")
@friendly_errors
def diagnose(netns: str | None, duration: float, fmt: str, bundle: str | None, trace: bool | None) -> None:
    """Measure for a window and report ranked findings with evidence and fixes."""
    from .diagnose import diagnose as run_diagnosis, diagnose_bundle

    if bundle:
        if netns:
            raise click.UsageError("--from reads a bundle; --netns applies only to live measurement")
        result = diagnose_bundle(bundle)
    else:
        with progress_bar(f"measuring {duration:g} s", duration, fmt == "text") as tick:
            result = run_diagnosis(netns, duration, on_tick=tick, trace=trace)
    if fmt == "json":
        click.echo(json_out.dumps(result.to_dict()))
    elif fmt in ("markdown", "html"):
        from .render import html, markdown
        from .render.output import write_stdout

        renderer = html if fmt == "html" else markdown
        write_stdout(renderer.render_diagnosis(result.to_dict()))   # UTF-8 whatever the locale
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


@main.command("fix")
@click.option("--netns", help="network namespace name (live measurement)")
@click.option("--duration", default=5.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="measurement window (before, and again after applying)")
@click.option("--from", "source", type=click.Path(dir_okay=False),
              help="plan from the JSON of `dropdoc diagnose --format json` instead of measuring")
@click.option("--apply", "do_apply", is_flag=True, help="make the changes (default: show the plan only)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation (scripts)")
@click.option("--persist", is_flag=True, help="after a successful run, write kept sysctls to --persist-file")
@click.option("--persist-file", default="/etc/sysctl.d/90-dropdoc.conf", show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--journal", "journal_path", default="/var/lib/dropdoc/journal.jsonl", show_default=True,
              type=click.Path(dir_okay=False), help="where every change is recorded")
@click.option("--rollback", is_flag=True, help="restore the previous values of the last run (or --run)")
@click.option("--run", "run_id", help="with --rollback: the run to undo")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@friendly_errors
def fix(netns: str | None, duration: float, source: str | None, do_apply: bool, yes: bool, persist: bool,
        persist_file: str, journal_path: str, rollback: bool, run_id: str | None, fmt: str) -> None:
    """Plan the fixes of a diagnosis; with --apply make, verify and keep or roll them back."""
    from .fix import cli_support

    signal.signal(signal.SIGTERM, _terminate_as_exit)
    code = cli_support.run(netns=netns, duration=duration, source=source, do_apply=do_apply, yes=yes,
                           persist=persist, persist_file=persist_file, journal_path=journal_path,
                           rollback=rollback, run_id=run_id, fmt=fmt,
                           progress=lambda label, total: progress_bar(label, total, fmt == "text"))
    sys.exit(code)


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


@main.command("trace")
@click.option("--netns", help="count only drops in this network namespace (as in `ip netns list`)")
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(0, 86400),
              help="seconds to trace; 0 = until Ctrl-C")
@click.option("--by", "by", default="reason,location", show_default=True,
              help="aggregate by a comma list of reason,location,proto,port,netns")
@click.option("--proto", help="only this protocol: ipv4, ipv6, arp, tcp, udp, icmp, icmpv6, sctp")
@click.option("--port", type=click.IntRange(1, 65535), help="only this destination port")
@click.option("--backend", type=click.Choice(["auto", "bpf", "tracefs"]), default="auto", show_default=True)
@click.option("--top", default=20, show_default=True, type=click.IntRange(1, 10000), help="rows shown")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@friendly_errors
def trace_cmd(netns: str | None, duration: float, by: str, proto: str | None, port: int | None,
              backend: str, top: int, fmt: str) -> None:
    """Count kernel packet drops (skb:kfree_skb) by reason and location, aggregated in the kernel."""
    from .trace.render import run_command
    from .trace.tracer import parse_by, parse_proto

    try:
        fields = parse_by(by)
        parse_proto(proto)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    result = run_command(netns, duration, fields, proto, port, backend, top, fmt)
    sys.exit(EXIT_NOT_MEASURED if result.backend == "unavailable" else 0)


def _register_commands() -> None:
    from .commands import commands

    for command in commands():
        main.add_command(command)


if __name__ == "__main__":
    # `python -m dropdoc.cli` (the functional tests) runs this file as __main__, a second
    # copy of the module: hand over to the real dropdoc.cli, with whose group the commands/
    # package registers (registering here would import them against a half-made module).
    from dropdoc.cli import main as _real_main

    _real_main()
else:
    _register_commands()
