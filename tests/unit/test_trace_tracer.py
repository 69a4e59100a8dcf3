"""Tracer results without a kernel: options, merging raw keys into named drops, JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropdoc.errors import NeedsPrivilege
from dropdoc.trace import kallsyms, program, reasons, tracer
from dropdoc.trace.ebpf import BpfBackend
from dropdoc.trace.tracefs import TracefsBackend

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"
UDP_RCV = 0xFFFFFFFF82048C10 + 0x4BC
NFT = 0xFFFFFFFF81F653D0 + 0x3E8


@pytest.fixture
def symbols(monkeypatch):
    table = kallsyms.parse((FIXTURES / "kallsyms_excerpt_6.18").read_text())
    monkeypatch.setattr(kallsyms, "_cache", table)
    return table


def test_parse_by_and_proto():
    assert tracer.parse_by("reason, port,reason") == ("reason", "port")
    with pytest.raises(ValueError):
        tracer.parse_by("reason,colour")
    with pytest.raises(ValueError):
        tracer.parse_by("")
    assert tracer.parse_proto("UDP") == (None, 17)
    assert tracer.parse_proto("ipv6") == (0x86DD, None)
    assert tracer.parse_proto(None) == (None, None)
    with pytest.raises(ValueError):
        tracer.parse_proto("ipx")


def bpf_backend(by) -> BpfBackend:
    backend = BpfBackend(program.Spec(3, frozenset(by)))
    backend.nargs = 3
    backend.reasons = reasons.ReasonNames({3: "NO_SOCKET", 12: "NETFILTER_DROP"}, {}, "btf")
    return backend


def test_bpf_keys_become_named_drops_merged_on_the_asked_fields(symbols, monkeypatch):
    monkeypatch.setattr(tracer, "netns_names", lambda: {4026532177: "srv"})
    t = tracer.Tracer(by=("reason", "netns"))
    t.backend = bpf_backend(t.by)
    raw = {(12, NFT, 0x0800, 17, 9100, 4026532177): 5,
           (12, NFT, 0x0800, 17, 9101, 4026532177): 2,  # port not asked: merged
           (3, UDP_RCV, 0x0800, 17, 9200, 4026532999): 4,
           (3, UDP_RCV, 0x0800, 17, 9200, 0): 1}
    result = t._result(raw, 0, 2.0)
    assert [(d.reason, d.netns, d.count) for d in result.drops] == [
        ("NETFILTER_DROP", "srv", 7), ("NO_SOCKET", "netns:4026532999", 4), ("NO_SOCKET", None, 1)]
    assert result.count("NETFILTER_DROP", netns="srv") == 7
    assert result.by_reason() == {"NETFILTER_DROP": 7, "NO_SOCKET": 5}
    assert result.total == 12


def test_locations_and_protocols_are_named(symbols):
    t = tracer.Tracer(by=("reason", "location", "proto", "port"))
    t.backend = bpf_backend(t.by)
    result = t._result({(3, UDP_RCV, 0x86DD, 17, 53, 0): 2, (99, 0x1234, 0x0806, 0, 0, 0): 1}, 0, 1.0)
    first, second = result.drops
    assert (first.reason, first.location, first.proto, first.l4, first.port) == (
        "NO_SOCKET", "__udp4_lib_rcv+0x4bc", "ipv6", "udp", 53)
    assert (second.reason, second.location, second.proto, second.l4, second.port) == (
        "UNKNOWN_99", "0x1234", "arp", None, None)
    doc = result.to_dict()
    assert doc["schema"] == "dropdoc.trace/1" and doc["backend"] == "bpf" and doc["lost"] == 0
    assert doc["drops"][0] == {"reason": "NO_SOCKET", "location": "__udp4_lib_rcv+0x4bc", "count": 2,
                               "proto": "ipv6", "l4": "udp", "port": 53}


def test_tracefs_keys_and_caveats():
    t = tracer.Tracer(by=("reason", "location", "netns"), proto="udp", port=53)
    backend = TracefsBackend()
    backend.reasons = reasons.ReasonNames({}, {}, "format")
    t.backend = backend
    t._tracefs_caveats(backend)
    result = t._result({("NO_SOCKET", "tcp_v4_rcv+0x91", 2048, None, None, None): 3,
                        (None, "00000000deadbeef", 2048, None, None, None): 1}, 7, 1.0)
    assert [(d.reason, d.location, d.netns) for d in result.drops] == [
        ("NO_SOCKET", "tcp_v4_rcv+0x91", None), ("(no reason: kernel < 5.17)", "00000000deadbeef", None)]
    assert result.lost == 7
    assert any("no netns" in w for w in result.warnings)
    assert result.unapplied_filters == ["proto", "port"]  # udp is an l4 filter: not in the event


def test_window_delta_subtracts_the_baseline():
    t = tracer.Tracer(by=("reason",))
    t._baseline = {(3, 0, 0, 0, 0, 0): 10}
    t._baseline_lost = 2
    counts, lost = t._delta({(3, 0, 0, 0, 0, 0): 15, (12, 0, 0, 0, 0, 0): 1}, 5)
    assert counts == {(3, 0, 0, 0, 0, 0): 5, (12, 0, 0, 0, 0, 0): 1} and lost == 3
    assert t._delta({}, None) == ({}, None)


def test_unavailable_result_carries_the_reasons():
    t = tracer.Tracer()
    t.errors = [("bpf", NeedsPrivilege("BPF_PROG_LOAD: Operation not permitted (run as root)")),
                ("tracefs", NeedsPrivilege("tracefs is not mounted and mounting it needs root"))]
    result = t._result({}, None, 0.0)
    assert result.backend == "unavailable" and result.status == "needs-privilege"
    assert "bpf: BPF_PROG_LOAD" in result.error and "tracefs:" in result.error
    assert result.to_dict()["drops"] == [] and result.lost is None


def test_bad_arguments():
    with pytest.raises(ValueError):
        tracer.Tracer(backend="perf")
    with pytest.raises(ValueError):
        tracer.Tracer(port=70000)
