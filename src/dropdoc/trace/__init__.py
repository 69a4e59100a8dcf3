"""Kernel drop tracing: where packets are freed as drops (skb:kfree_skb), why, in which
network namespace - aggregated in the kernel (eBPF) with a tracefs fallback.

Library API: `trace(...)` for a timed run, `Tracer` for the full lifecycle, and
`start_window`/`finish_window` for a measurement window (per-reason counts for a netns).
"""

from .tracer import (  # noqa: F401
    DEFAULT_BY,
    Drop,
    Tracer,
    TraceResult,
    finish_window,
    parse_by,
    parse_proto,
    start_window,
    trace,
)
