"""`dropdoc sim`: predict drops per stage for a load and settings, and answer "what if".

    dropdoc sim scenario.toml
    dropdoc sim --conn-rate 400 --accept-rate 100 --somaxconn 16 --what-if somaxconn=1024
    dropdoc sim --from-host --netns srv --what-if netdev_max_backlog=4096 --html sim.html

Values come, later ones winning, from: defaults, a calibration (--from-host / --from),
the scenario file, then --set/--<param> flags. Thin: everything is in dropdoc.sim.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from typing import Any

import click

from ..cli import friendly_errors, progress_bar
from ..sim.params import SimParams, SimParamsError, describe

RESERVED = {"seconds", "dt", "what_if", "params"}


def _param_options(func):
    """One --<name> option per SimParams field (values parsed like scenario values: 250k, 1e6, none)."""
    for f in reversed(dataclasses.fields(SimParams)):
        meta = f.metadata
        unit = f" [{meta['unit']}]" if meta["unit"] else ""
        func = click.option(f"--{f.name.replace('_', '-')}", f"param_{f.name}", default=None, metavar="V",
                            help=f"{meta['help']}{unit}")(func)
    return func


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SimParamsError(f"{what} {item!r}: expected key=value, e.g. somaxconn=1024")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def load_scenario(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TOML scenario: parameter keys (flat or under [params]), optional `seconds`, `dt` and a
    [what_if] table. Returns (values, run settings incl. what_if); every error names the file."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise SimParamsError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SimParamsError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise SimParamsError(f"{path}: not valid TOML (not UTF-8 text)") from None
    values = {k: v for k, v in data.items() if k not in RESERVED}
    if "params" in data:
        if not isinstance(data["params"], dict):
            raise SimParamsError(f"{path}: [params] must be a table")
        values.update(data["params"])
    run = {k: data[k] for k in ("seconds", "dt", "what_if") if k in data}
    if "what_if" in run and not isinstance(run["what_if"], dict):
        raise SimParamsError(f"{path}: [what_if] must be a table of key = value")
    try:
        params = SimParams.from_dict(values)
        for key in ("seconds", "dt"):
            if key in run:
                _positive(run[key], key)
    except SimParamsError as exc:
        raise SimParamsError(f"{path}: {exc}") from None
    try:
        params.replace(**{str(k): v for k, v in run.get("what_if", {}).items()})
    except SimParamsError as exc:
        raise SimParamsError(f"{path}: [what_if] {exc}") from None
    return values, run


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise SimParamsError(f"{name}: expected a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SimParamsError(f"{name}: expected a number of seconds, got {value!r}") from None
    if not (number > 0 and number < 1e6):
        raise SimParamsError(f"{name}: expected a positive number of seconds below 1e6, got {value!r}")
    return number


def _check_html_path(path: str) -> None:
    """Before simulating: a page that cannot be written is said at once, not after the run."""
    if path == "-":
        raise click.UsageError("--html needs a file name (stdout carries the text or JSON)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SimParamsError(f"cannot write {path}: directory {os.path.dirname(path) or directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK) and not os.access(path, os.W_OK):
        raise SimParamsError(f"cannot write {path}: Permission denied")


@click.command(name="sim")
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("--seconds", default=None, help="simulated time [default: 10, or the scenario's]")
@click.option("--dt", default=None, help="time step in seconds [default: 1 ms, finer for short bursts]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="set any parameter (repeatable)")
@click.option("--what-if", "what_ifs", multiple=True, metavar="KEY=VALUE",
              help="run again with this change and compare before/after (repeatable)")
@click.option("--from-host", is_flag=True, help="calibrate from this host: settings and measured rates")
@click.option("--netns", help="with --from-host: measure inside this network namespace")
@click.option("--measure-seconds", default=5.0, show_default=True, type=click.FloatRange(0.2, 3600),
              help="with --from-host: measurement window")
@click.option("--from", "bundle", type=click.Path(dir_okay=False), help="calibrate from a bundle (dropdoc collect -o)")
@click.option("--size", "size_finding", metavar="FINDING",
              help="find the smallest queue of this stage (e.g. cpu.backlog_drop) that takes the load without drops")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="also write an HTML page with charts")
@click.option("--list-params", is_flag=True, help="list every parameter with its unit and default, then exit")
@_param_options
@friendly_errors
def command(scenario: str | None, seconds: str | None, dt: str | None, sets: tuple[str, ...],
            what_ifs: tuple[str, ...], from_host: bool, netns: str | None, measure_seconds: float,
            bundle: str | None, size_finding: str | None, fmt: str, html_path: str | None,
            list_params: bool, **param_flags: str | None) -> None:
    """Model the receive/transmit path and predict drops per stage: what if?"""
    from rich.console import Console

    from ..sim import simulate
    from ..sim import render as sim_render

    console = Console()
    if list_params:
        _list_params(console)
        return
    if netns and not from_host:
        raise click.UsageError("--netns applies to --from-host")
    if from_host and bundle:
        raise click.UsageError("--from-host measures this host; --from reads a bundle: choose one")
    if html_path:
        _check_html_path(html_path)
    if size_finding:
        from ..sim.sizing import PRIMARY

        if size_finding not in PRIMARY:
            raise SimParamsError(f"--size {size_finding!r}: no queue to size (one of {', '.join(PRIMARY)})")

    calibration = None
    base = SimParams()
    if from_host or bundle:
        from ..sim.calibrate import describe_calibration, params_from_bundle, params_from_host

        if bundle:
            calibration = params_from_bundle(bundle)
        else:
            with progress_bar(f"measuring {measure_seconds:g} s", measure_seconds, fmt == "text") as tick:
                calibration = params_from_host(netns, measure_seconds, on_tick=tick)
        base = calibration.params
    values: dict[str, Any] = {}
    run: dict[str, Any] = {}
    if scenario:
        values, run = load_scenario(scenario)
    flags = {name[len("param_"):]: value for name, value in param_flags.items() if value is not None}
    values.update(flags)
    values.update(_pairs(sets, "--set"))
    params = SimParams.from_dict(values, base=base)
    run_seconds = _positive(seconds if seconds is not None else run.get("seconds", 10.0), "seconds")
    run_dt = None if dt is None and "dt" not in run else _positive(dt if dt is not None else run["dt"], "dt")
    if run_dt is not None and run_dt > run_seconds:
        raise SimParamsError(f"dt: a step of {run_dt:g} s is longer than the {run_seconds:g} s simulated")
    what_if = {str(k): v for k, v in run.get("what_if", {}).items()}
    what_if.update(_pairs(what_ifs, "--what-if"))
    try:  # checked before the first run, not after it
        changed = params.replace(**what_if) if what_if else None
    except SimParamsError as exc:
        raise SimParamsError(f"--what-if: {exc}") from None

    result = simulate(params, run_seconds, run_dt)
    after = simulate(changed, run_seconds, run_dt) if changed is not None else None
    sizing = None
    if size_finding:
        from ..sim.sizing import size_queue

        sizing = size_queue(params, size_finding, seconds=run_seconds, dt=run_dt)
    calibration_lines = describe_calibration(calibration) if calibration else None

    if fmt == "json":
        from ..render import json_out

        doc: dict[str, Any] = result.to_dict() if after is None else {
            "schema": "dropdoc.sim.compare/1", "changes": what_if,
            "before": result.to_dict(), "after": after.to_dict()}
        if calibration:
            doc["calibration"] = calibration.to_dict()
        if sizing:
            doc["sizing"] = sizing.to_dict()
        click.echo(json_out.dumps(doc))
    else:
        if calibration_lines:
            for line in calibration_lines:
                console.print(line, highlight=False, style="dim" if line.startswith("  defaults") else None)
        sim_render.render_text(result, console)
        if after is not None:
            console.print()
            sim_render.render_compare(result, after, what_if, console)
        if sizing:
            console.print()
            _print_sizing(sizing, console)
    if html_path:
        from ..render.output import write_text

        write_text(html_path, sim_render.render_html(result, after, what_if, calibration_lines))
        if fmt == "text":
            console.print(f"wrote {html_path}", style="dim")


def _print_sizing(sizing, console) -> None:
    if sizing.slots is None:
        console.print(f"sizing {sizing.finding}: {sizing.reason}", highlight=False)
        return
    changes = ", ".join(f"{k}={v}" for k, v in sizing.changes.items())
    console.print(f"sizing {sizing.finding}: smallest queue without drops {sizing.slots:,} "
                  f"({changes}); {sizing.reason}; {sizing.probes} simulations", highlight=False)


def _list_params(console) -> None:
    """Plain lines (grep-friendly): name = default  [unit]  meaning, by group."""
    group = None
    for row in describe():
        if row["group"] != group:
            group = row["group"]
            click.echo(f"[{group}]")
        default = "none" if row["default"] is None else row["default"]
        if isinstance(default, bool):
            default = str(default).lower()
        unit = f"  [{row['unit']}]" if row["unit"] else ""
        click.echo(f"  {row['name']} = {default}{unit}  {row['help']}")
