"""tracefs fallback parsers: event lines, LOST markers, per-CPU stats, mount table."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.trace import tracefs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"


def test_captured_trace_lines():
    counts, lost = tracefs.parse_events((FIXTURES / "trace_6.18.txt").read_text())
    assert lost == 0
    assert counts == {
        ("NO_SOCKET", "__udp4_lib_rcv+0x4bc", 2048): 3,
        ("NO_SOCKET", "__udp6_lib_rcv+0xe1", 34525): 2,
        ("NO_SOCKET", "tcp_v4_rcv+0x91", 2048): 1,
    }


def test_crafted_old_kernel_lines_lost_marker_and_module():
    counts, lost = tracefs.parse_events((FIXTURES / "trace_crafted_old_kernels.txt").read_text())
    assert lost == 42
    assert counts[(None, "00000000deadbeef", 2048)] == 2  # < 5.17: no reason, hashed location
    assert counts[("NO_SOCKET", "00000000feedf00d", 34525)] == 1
    assert counts[("NETFILTER_DROP", "nft_do_chain+0x3e8 [nf_tables]", 2048)] == 1


def test_other_lines_are_ignored():
    counts, lost = tracefs.parse_events("# tracer: nop\n   sshd-1 [000] 1.0: consume_skb: skbaddr=0\n\n")
    assert not counts and lost == 0


def test_stats_with_overruns():
    per_cpu = [tracefs.parse_stats((FIXTURES / f"stats_overrun_cpu{i}").read_text()) for i in (0, 1)]
    assert per_cpu[1]["overrun"] == 19872 and per_cpu[1]["entries"] == 131
    assert tracefs.lost_from_stats(per_cpu) == 19872
    with pytest.raises(ParseError):
        tracefs.parse_stats("entries: 1\n")


def test_find_mount():
    assert tracefs.find_mount("tracefs /sys/kernel/tracing tracefs rw,nosuid 0 0\n") == "/sys/kernel/tracing"
    assert tracefs.find_mount("proc /proc proc rw 0 0\n") is None
    assert tracefs.find_mount("bad\n\ntracefs /x\\040y tracefs rw 0 0\n") == "/x y"
