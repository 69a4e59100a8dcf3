"""`dropdoc watch`: drop rates per finding, live, every second; optionally recorded.

A thin layer: meter.run() samples, render/watch_view.py says what to show, history.py
stores. On a terminal the view is redrawn in place (rich Live); piped, each interval is
one plain log line, or with --format json one JSON object per line (JSON Lines).
Ctrl-C, SIGTERM and SIGHUP (the terminal closed) only raise a flag that the sampling loop
checks between samples, so an interrupted watch never leaves a half-written sample and
exits 0 with the history closed. A reader that goes away (`dropdoc watch | head -1`) or a
terminal that hangs up stops it the same way; any other output error (a full disk behind
`> file`) is a one-line error after the history is closed.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable

import click

from ..cli import friendly_errors
from ..errors import DropdocError

# How often the live view is redrawn while waiting for the next sample (the elapsed time
# in its header moves even when --interval is long).
_REDRAW_EVERY_S = 1.0
# Granularity of the wait between samples: how fast a Ctrl-C is noticed.
_POLL_S = 0.05


class StopFlag:
    """Set from a signal handler, polled by the sampling loop. A plain attribute, not a
    threading.Event: Event.set() inside a handler can deadlock on the Event's own lock
    when the signal lands while the main thread holds it."""

    def __init__(self, on_tick: Callable[[], None] | None = None) -> None:
        self.stopped = False
        self.on_tick = on_tick
        self._ticked = time.monotonic()

    def set(self, *_signal_args) -> None:
        self.stopped = True

    def is_set(self) -> bool:
        return self.stopped

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, _POLL_S))
            if self.on_tick and time.monotonic() - self._ticked >= _REDRAW_EVERY_S:
                self._ticked = time.monotonic()
                self.on_tick()
        return self.stopped


def _duration(value: str, option: str) -> float:
    from ..history import parse_duration

    try:
        return parse_duration(value)
    except DropdocError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.command("watch")
@click.option("--netns", help="network namespace name (as in `ip netns list`)")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="seconds between samples")
@click.option("--record", "record", type=click.Path(dir_okay=False),
              help="keep every sample in this SQLite history file (read by `dropdoc report`)")
@click.option("--retention", default=None,
              help="with --record: delete samples older than this (90s, 15m, 24h, 7d)  [default: 7d]")
@click.option("--count", type=click.IntRange(min=1), help="stop after N intervals (default: until Ctrl-C)")
@click.option("--window", "window", default="60s", show_default=True,
              help="span of the sparklines; a finding stays listed while it dropped within it")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: live view on a terminal, one log line per interval when piped; "
                   "json: one JSON object per interval (JSON Lines)")
@friendly_errors
def command(netns: str | None, interval: float, record: str | None, retention: str | None, count: int | None,
            window: str, fmt: str) -> None:
    """Live drop rates per finding with sparklines; --record keeps them in SQLite."""
    from ..history import DEFAULT_RETENTION_S, History
    from ..meter import Meter
    from ..netns import netns_path
    from ..render import watch_view

    if retention is not None and record is None:
        raise click.UsageError("--retention applies to --record")
    window_s = _duration(window, "--window")
    retention_s = _duration(retention, "--retention") if retention else DEFAULT_RETENTION_S
    if netns:
        netns_path(netns)  # an unknown namespace is one line now, not after opening the history

    history = History(record, retention_s=retention_s) if record else None
    try:
        if history:
            history.describe_host(netns)
        state = watch_view.new_state(platform.node(), netns, interval, window_s, started=time.monotonic(),
                                     recording=record,
                                     recorded=history.count() if history else None,
                                     retention=(retention or "7d") if history else None)
        live = fmt == "text" and sys.stdout.isatty()
        if live:
            _watch_live(state, Meter(netns), history, count)
        else:
            _watch_lines(state, Meter(netns), history, count, fmt)
    finally:
        if history:
            history.close()
    sys.exit(0)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_on_signals(flag: StopFlag) -> Callable[[], None]:
    """SIGINT/SIGTERM/SIGHUP set the flag; returns a function restoring the previous handlers."""
    previous = {sig: signal.signal(sig, flag.set) for sig in STOP_SIGNALS}
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the reader or terminal is gone, and Python's own flush at
    exit must not fail on it (an error message and exit status 120)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class OutputFailed(DropdocError):
    """Standard output cannot be written (not a closed pipe: that is a normal stop)."""


def _output_error(exc: OSError, flag: StopFlag) -> OutputFailed | None:
    """Stop on an output error: a reader or terminal gone (EPIPE, EIO) is a quiet stop,
    anything else an error to report once the history is closed."""
    _silence_stdout()
    flag.set()
    if exc.errno in (errno.EPIPE, errno.EIO):
        return None
    return OutputFailed(f"cannot write to standard output: {exc.strerror or exc}")


def _record(state, history, interval) -> None:
    state.add(interval)
    if history:
        appended = history.append(interval)
        state.recorded = (state.recorded or 0) + 1
        if appended.removed:
            from ..history import iso

            state.recorded -= appended.removed
            state.notice = (f"the clock was set back: {appended.removed} samples stamped after "
                            f"{iso(appended.removed_after)} removed from {state.recording}")


def _watch_live(state, meter, history, count: int | None) -> None:
    from rich.console import Console
    from rich.live import Live

    from ..meter import run
    from ..render import watch_view

    console = Console()

    def view():
        return watch_view.render(state, width=console.width, now=time.monotonic())

    flag = StopFlag()
    restore = _stop_on_signals(flag)
    failed: OutputFailed | None = None
    try:
        with Live(view(), console=console, auto_refresh=False, transient=False) as live:
            def redraw() -> None:
                nonlocal failed
                try:
                    live.update(view(), refresh=True)  # the width is read again: resizes follow
                except OSError as exc:  # the terminal hung up (EIO) before SIGHUP arrived
                    failed = failed or _output_error(exc, flag)

            def started() -> None:
                state.started = time.monotonic()
                redraw()

            def on_interval(interval) -> None:
                _record(state, history, interval)
                redraw()

            flag.on_tick = redraw
            run(meter, state.interval, count, on_interval=on_interval, stop=flag, on_start=started)
    except OSError as exc:  # leaving the live view (cursor shown again) on a terminal that is gone
        failed = failed or _output_error(exc, flag)
    finally:
        restore()
    if failed:
        raise failed


def _watch_lines(state, meter, history, count: int | None, fmt: str) -> None:
    from ..meter import run
    from ..render import watch_view

    failed: OutputFailed | None = None

    def started() -> None:
        state.started = time.monotonic()
        where = f"netns {state.netns}" if state.netns else "the host network namespace"
        recording = f", recording to {state.recording}" if state.recording else ""
        _note(f"dropdoc watch: {where} every {state.interval:g} s{recording}")

    def on_interval(interval) -> None:
        nonlocal failed
        _record(state, history, interval)
        if state.notice:
            _note(f"dropdoc watch: {state.notice}")
            state.notice = None
        if fmt == "json":
            line = json.dumps(watch_view.json_line(state, interval), separators=(",", ":"))
        else:
            line = watch_view.plain_line(state, interval)
        try:
            click.echo(line)
        except OSError as exc:  # `dropdoc watch | head`: the reader is gone; stop like on Ctrl-C
            failed = failed or _output_error(exc, flag)

    flag = StopFlag()
    restore = _stop_on_signals(flag)
    try:
        run(meter, state.interval, count, on_interval=on_interval, stop=flag, on_start=started)
    finally:
        restore()
    if failed:
        raise failed


def _note(text: str) -> None:
    """A status line on stderr; a closed stderr is no reason to stop watching."""
    try:
        click.echo(text, err=True)
    except OSError:
        pass
