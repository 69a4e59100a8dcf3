"""Showing a trace: a rich table (live while tracing, final at the end) and the command
runner behind `dropdoc trace` (signals, live refresh), so cli.py stays a thin layer."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .tracer import Tracer, TraceResult, trace

COLUMNS = {"reason": "reason", "location": "location", "proto": "proto", "port": "port",
           "netns": "netns"}


def _cell(drop: Any, field_name: str) -> str:
    if field_name == "proto":
        parts = [p for p in (drop.proto, drop.l4) if p]
        return "/".join(parts) or "-"
    value = getattr(drop, field_name)
    return "-" if value is None else str(value)


def table(result: TraceResult, top: int = 20) -> Group:
    seconds = result.seconds if result.seconds > 0 else None
    title = (f"kfree_skb drops - backend {result.backend}, {result.seconds:.1f} s, "
             f"{result.total} drops" + (f", {result.total / seconds:.1f}/s" if seconds else ""))
    grid = Table(title=title, title_justify="left", expand=False)
    for name in result.by:
        grid.add_column(COLUMNS[name], overflow="fold")
    grid.add_column("count", justify="right")
    grid.add_column("/s", justify="right")
    for drop in result.drops[:top]:
        rate = f"{drop.count / seconds:.1f}" if seconds else "-"
        grid.add_row(*[_cell(drop, name) for name in result.by], str(drop.count), rate)
    parts: list[Any] = [grid]
    hidden = len(result.drops) - top
    if hidden > 0:
        parts.append(Text(f"... {hidden} more rows (--top, or --format json for all)", style="dim"))
    lost = "unknown" if result.lost is None else str(result.lost)
    style = "bold red" if result.lost else "dim"
    parts.append(Text(f"events lost by the tracer: {lost}", style=style))
    filters = ", ".join(f"{k}={v}" for k, v in result.filters.items() if k != "netns_inode")
    if filters:
        parts.append(Text(f"filters: {filters}", style="dim"))
    for warning in result.warnings:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)


def render_unavailable(result: TraceResult, console: Console) -> None:
    console.print(f"[bold]drop tracing unavailable[/bold] ({result.status}): {result.error}")


def run_command(netns: str | None, duration: float, by: tuple[str, ...], proto: str | None,
                port: int | None, backend: str, top: int, fmt: str) -> TraceResult:
    """`dropdoc trace`: Ctrl-C and SIGTERM end the trace early (results still shown);
    everything attached is released on every path."""
    from ..render import json_out

    console = Console()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    live = None
    try:
        if fmt == "text" and console.is_terminal:
            from rich.live import Live

            live = Live(console=console, auto_refresh=False, transient=True)
            live.start()

            def on_tick(tracer: Tracer) -> None:
                live.update(table(tracer.snapshot(), top), refresh=True)
        else:
            on_tick = None
        def on_attach(tracer: Tracer) -> None:
            if tracer.backend is None:
                return
            until = f"{duration:g} s" if duration > 0 else "Ctrl-C"
            print(f"dropdoc trace: counting drops with the {tracer.backend.name} backend "
                  f"(tracepoint args: {tracer.backend.variant}) for {until}", file=sys.stderr, flush=True)

        try:
            result = trace(netns, duration, by, proto, port, backend, on_tick=on_tick, stop_event=stop,
                           on_attach=on_attach)
        finally:
            if live is not None:
                live.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if fmt == "json":
        print(json_out.dumps(result.to_dict()))
    elif result.backend == "unavailable":
        render_unavailable(result, console)
    else:
        console.print(table(result, top))
    return result
