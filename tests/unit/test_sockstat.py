"""sockstat.parse on /proc/net/sockstat{,6} (6.18 captures, 2.6.18/3.10 layouts, broken
variants) and sockstat.read over copied --root trees (limits tcp_mem/udp_mem)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.snapshot import take_snapshot
from dropdoc.sources import sockstat
from dropdoc.sources.base import SOURCES, ReadContext, read_source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HERE = FIXTURES / "sockstat"


def text(name: str) -> str:
    return (HERE / name).read_bytes().decode("utf-8", errors="replace")


def test_real_6_18_host():
    tables = sockstat.parse(text("sockstat"))
    assert list(tables) == ["sockets", "TCP", "UDP", "UDPLITE", "RAW", "FRAG"]
    assert tables["sockets"] == {"used": 17}
    assert tables["TCP"] == {"inuse": 1, "orphan": 0, "tw": 0, "alloc": 1, "mem": 323}
    assert tables["UDP"] == {"inuse": 0, "mem": 205}
    assert tables["UDPLITE"] == {"inuse": 0}
    assert tables["FRAG"] == {"inuse": 0, "memory": 0}


def test_real_6_18_sockstat6_has_no_memory():
    tables = sockstat.parse(text("sockstat6"))
    assert list(tables) == ["TCP6", "UDP6", "UDPLITE6", "RAW6", "FRAG6"]
    assert tables["TCP6"] == {"inuse": 0}
    assert "mem" not in tables["UDP6"]


def test_real_netns_capture_shows_global_memory_with_local_counts():
    host, netns = sockstat.parse(text("sockstat")), sockstat.parse(text("sockstat_netns"))
    # inuse and "sockets: used" are per namespace, TCP/UDP mem and TCP alloc are host-wide
    assert netns["sockets"]["used"] == 0 and netns["TCP"]["inuse"] == 0
    assert netns["TCP"]["mem"] == host["TCP"]["mem"] == 323
    assert netns["UDP"]["mem"] == host["UDP"]["mem"] == 205


def test_real_busy_netns_capture():
    tables = sockstat.parse(text("sockstat_netns_busy"))
    assert tables["TCP"]["inuse"] == 10 and tables["UDP"]["inuse"] == 2


def test_2_6_18_udp_without_mem_is_absent_not_zero():
    tables = sockstat.parse(text("sockstat_2.6.18"))
    assert tables["UDP"] == {"inuse": 6}
    assert "UDPLITE" not in tables
    stat = sockstat.Sockstat(tables, None)
    assert stat.udp_mem_pages is None
    assert stat.tcp_mem_pages == 9
    assert stat.get("UDPLITE", "inuse") is None


def test_3_10_layout():
    tables = sockstat.parse(text("sockstat_3.10"))
    assert tables["TCP"] == {"inuse": 8, "orphan": 0, "tw": 3, "alloc": 11, "mem": 1}
    assert tables["UDP"] == {"inuse": 4, "mem": 2}
    six = sockstat.parse(text("sockstat6_3.10"))
    stat = sockstat.Sockstat(tables, six)
    assert stat.get("TCP6", "inuse") == 3
    assert stat.get("TCP", "inuse") == 8


def test_crafted_busy_host_under_pressure():
    stat = sockstat.Sockstat(sockstat.parse(text("sockstat_tcp_pressure")), None,
                             tcp_mem=(287_898, 383_867, 575_796))
    assert stat.tcp_mem_pages == 401_233 > stat.tcp_mem[1]
    assert stat.get("TCP", "orphan") == 1204


def test_extra_blank_lines_are_ignored():
    tables = sockstat.parse(text("sockstat_extra_blank_lines"))
    assert tables == {"sockets": {"used": 17}, "TCP": {"inuse": 1, "orphan": 0, "tw": 0, "alloc": 1, "mem": 323}}


def test_negative_memory_is_kept():
    # proto_memory_allocated is a signed long; older kernels could print a transient negative
    assert sockstat.parse("TCP: inuse 1 mem -2\n")["TCP"]["mem"] == -2


@pytest.mark.parametrize("name, message", [
    ("sockstat_truncated", "name value pairs"),
    ("sockstat_non_numeric", "not a number"),
    ("sockstat_no_colon", "expected 'SECTION: name value"),
    ("sockstat_duplicate_section", "section 'TCP' twice"),
    ("sockstat_missing_value", "name value pairs"),
])
def test_broken_variants(name, message):
    with pytest.raises(ParseError, match=message):
        sockstat.parse(text(name))


@pytest.mark.parametrize("bad", ["", "\n\n", "TCP:\n", "TCP: inuse\n", "TCP: 5 inuse\n",
                                 "TCP: inuse 1 inuse 2\n", "T C P: inuse 1\n", ": inuse 1\n"])
def test_malformed_lines(bad):
    with pytest.raises(ParseError):
        sockstat.parse(bad)


@pytest.mark.parametrize("text_, expected", [
    ("287898\t383867\t575796\n", (287898, 383867, 575796)),
    ("1 2 3", (1, 2, 3)),
])
def test_parse_limit(text_, expected):
    assert sockstat.parse_limit(text_, "net.ipv4.tcp_mem") == expected


@pytest.mark.parametrize("bad", ["", "7\n", "1 2\n", "1 2 3 4\n", "a b c\n", "1 -2 3\n"])
def test_parse_limit_rejects(bad):
    with pytest.raises(ParseError):
        sockstat.parse_limit(bad, "net.ipv4.udp_mem")


def test_read_copied_root_tree_with_limits():
    data = sockstat.read(ReadContext(root=str(HERE / "root"), live=False))
    assert data.tables["TCP"]["mem"] == 323
    assert data.tables6 is not None and data.tables6["UDP6"] == {"inuse": 0}
    assert data.tcp_mem == (287898, 383867, 575796)
    assert data.udp_mem == (575799, 767734, 1151598)
    assert data.limits_from == "netns"
    assert data.limit("net.ipv4.tcp_mem") == data.tcp_mem
    assert data.page_size > 0


def test_read_tree_without_limits_or_ipv6():
    # a tree copied inside a namespace: no tcp_mem/udp_mem there, and no sockstat6 copied
    data = sockstat.read(ReadContext(root=str(HERE / "root_netns"), live=False))
    assert data.tables["sockets"]["used"] == 0
    assert data.tables6 is None
    assert (data.tcp_mem, data.udp_mem, data.limits_from) == (None, None, None)


def test_read_missing_file_is_unavailable():
    result = read_source(SOURCES["sockstat"], ReadContext(root=str(HERE / "nonexistent"), live=False))
    assert result.status == "unavailable"


def test_read_broken_file_is_failed(tmp_path):
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "sockstat").write_bytes((HERE / "sockstat_truncated").read_bytes())
    result = read_source(SOURCES["sockstat"], ReadContext(root=str(tmp_path), live=False))
    assert result.status == "failed" and "sockstat" in result.error


def test_limits_are_registered_as_global_sysctls():
    from dropdoc.sources import sysctls

    for key in ("net.ipv4.tcp_mem", "net.ipv4.udp_mem"):
        assert key in sysctls.KEYS and key in sysctls.GLOBAL_KEYS


def test_live_read_and_bundle_replay_roundtrip():
    snap = take_snapshot(names=["sockstat"], record=True)
    live = snap.data("sockstat")
    assert live is not None and live.tcp_mem_pages is not None
    ctx = ReadContext(root="/nonexistent", live=False, replay=snap.raw)
    replayed = sockstat.read(ctx)
    assert replayed.tables == live.tables
    assert replayed.tcp_mem == live.tcp_mem and replayed.page_size == live.page_size
    json.dumps(snap.to_dict())  # JSON-serialisable snapshot
