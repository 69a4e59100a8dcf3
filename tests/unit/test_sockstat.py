"""sockstat.parse on /proc/net/sockstat{,6} (6.18 captures, 2.6.18/3.10 layouts, broken
variants) and sockstat.read over copied --root trees (limits tcp_mem/udp_mem)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.snapshot import take_snapshot
from dropdoc.sources import sockstat, sysctls
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
    assert live.limits_from == replayed.limits_from == "netns"
    assert "json/host_sysctls" not in snap.raw  # the host namespace: nothing read from outside
    json.dumps(snap.to_dict())  # JSON-serialisable snapshot


# What take_snapshot hands a namespace's sources: the global sysctls, read in the host
# namespace before entering it (values as sysctls.read_keys returns them).
HOST_SYSCTLS = {"net.ipv4.tcp_mem": (287898, 383867, 575796), "net.ipv4.udp_mem": (575799, 767734, 1151598),
                "net.core.rmem_max": 212992, "net.core.netdev_budget": None}


def netns_tree(**kwargs) -> ReadContext:
    """The tree copied inside a namespace (no tcp_mem/udp_mem there), as read in `ns`."""
    return ReadContext(root=str(HERE / "root_netns"), netns="ns", live=False, **kwargs)


def test_in_a_namespace_the_limits_come_from_host_sysctls():
    data = sockstat.read(netns_tree(host_sysctls=HOST_SYSCTLS))
    assert data.tcp_mem == (287898, 383867, 575796) and data.udp_mem == (575799, 767734, 1151598)
    assert data.limits_from == "host"


def test_limits_readable_in_the_namespace_are_taken_from_there():
    ctx = ReadContext(root=str(HERE / "root"), live=False,
                      host_sysctls={"net.ipv4.tcp_mem": (1, 2, 3), "net.ipv4.udp_mem": (4, 5, 6)})
    data = sockstat.read(ctx)
    assert data.tcp_mem == (287898, 383867, 575796) and data.limits_from == "netns"


def test_host_limits_are_recorded_as_the_sysctls_source_records_them_and_replay():
    recorder: dict[str, bytes] = {}
    data = sockstat.read(netns_tree(recorder=recorder, host_sysctls=HOST_SYSCTLS))
    by_sysctls: dict[str, bytes] = {}
    sysctls.read(netns_tree(recorder=by_sysctls, host_sysctls=HOST_SYSCTLS))
    # one key written by both sources: it must not matter which one reads first
    assert recorder["json/host_sysctls"] == by_sysctls["json/host_sysctls"]
    assert not any(key.startswith("json/sockstat/host") for key in recorder)
    replayed = sockstat.read(ReadContext(root="/nonexistent", netns="ns", live=False, replay=recorder))
    assert replayed == data and replayed.limits_from == "host"


@pytest.mark.parametrize("bad", [None, "287898 383867 575796", [1, 2], [1, 2, 3, 4], [1, -2, 3], [True, 1, 2],
                                 [1.5, 2, 3], ["1", "2", "3"], {"low": 1}])
def test_damaged_host_limits_in_a_bundle_are_unknown(bad):
    recorder: dict[str, bytes] = {}
    sockstat.read(netns_tree(recorder=recorder, host_sysctls=HOST_SYSCTLS))
    recorder["json/host_sysctls"] = json.dumps({"net.ipv4.tcp_mem": bad, "net.ipv4.udp_mem": [4, 5, 6]}).encode()
    data = sockstat.read(ReadContext(root="/nonexistent", netns="ns", live=False, replay=recorder))
    assert data.tcp_mem is None and data.udp_mem == (4, 5, 6) and data.limits_from == "host"


@pytest.mark.parametrize("recorded", [b"[287898, 383867, 575796]", b"null", b"\"287898 383867 575796\""])
def test_host_sysctls_that_are_not_a_table_are_ignored(recorded):
    recorder: dict[str, bytes] = {}
    sockstat.read(netns_tree(recorder=recorder, host_sysctls=HOST_SYSCTLS))
    recorder["json/host_sysctls"] = recorded
    result = read_source(SOURCES["sockstat"], ReadContext(root="/nonexistent", live=False, replay=recorder))
    assert result.ok and (result.data.tcp_mem, result.data.udp_mem, result.data.limits_from) == (None, None, None)


def test_bundle_without_host_sysctls_has_no_limits():
    recorder: dict[str, bytes] = {}
    sockstat.read(netns_tree(recorder=recorder))  # no host_sysctls handed over (host namespace, a --root tree)
    assert "json/host_sysctls" not in recorder
    data = sockstat.read(ReadContext(root="/nonexistent", live=False, replay=recorder))
    assert (data.tcp_mem, data.udp_mem, data.limits_from) == (None, None, None)
    assert data.tables["sockets"]["used"] == 0


def test_no_limit_file_is_held_open():
    """The limits come through ReadContext.host_sysctls: no descriptor kept from import time."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the directory's own descriptor, gone by now
    assert not [path for path in held if path.endswith(("/ipv4/tcp_mem", "/ipv4/udp_mem"))]
