"""What the tracing backends (ebpf.BpfBackend, tracefs.TracefsBackend) share."""

from __future__ import annotations

import time
from collections.abc import Callable


def attach_timed(attach: Callable[[], None], close: Callable[[], None]) -> float:
    """Run a backend's attach steps; if any fails - also on Ctrl-C - undo what was done
    with close() and re-raise. Returns how long attaching took in ms (startup_ms)."""
    started = time.monotonic()
    try:
        attach()
    except BaseException:
        close()
        raise
    return (time.monotonic() - started) * 1000
