"""The fallback ladder: older kernels, missing files, other ways in - gaps, never wrong zeros.

Copied proc/sys trees (tests/fixtures/trees, built by build_trees.py from the parser
fixtures) shaped like CentOS 7 (3.10, IPv6 disabled), Debian 10 (4.19) and Debian 11
(5.10), each as a 'before' and an 'after' copy a window apart, go through the same code
as a live machine: take_snapshot(root=...) -> delta.compute -> rules -> diagnosis.
And the UDP socket table's own ladder: sock_diag, else /proc/net/udp{,6}.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
from pathlib import Path

import pytest

from dropdoc import delta
from dropdoc.diagnose import diagnosis_from_window
from dropdoc.model import SEVERITY_ORDER
from dropdoc.rules.engine import load_rules, matching
from dropdoc.snapshot import take_snapshot
from dropdoc.sources import SOURCES, ReadContext, read_source
from dropdoc.sources import proc_sockets
from dropdoc.window import Window

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TREES = FIXTURES / "trees"
NAMES = ("el7-3.10", "deb10-4.19", "deb11-5.10")
WINDOW = 5.0

# Statuses of the sources every tree must give (the others: any status, never a crash).
CORE_OK = ("snmp", "netstat", "softnet", "netdev", "sysctls", "link_stats", "udp_sockets",
           "tcp_listeners", "sockstat")
EXPECTED = {
    "el7-3.10": {"snmp6": "unavailable", "process_sockets": "unavailable"},
    "deb10-4.19": {"snmp6": "ok", "process_sockets": "unavailable"},
    "deb11-5.10": {"snmp6": "ok", "process_sockets": "unavailable"},
}
# (finding id, drops) the 'after' copy adds (see AFTER in build_trees.py).
FINDINGS = {
    "el7-3.10": {"tcp.listen_overflow": 600, "udp.rcvbuf_full": 250, "cpu.backlog_drop": 1000},
    "deb10-4.19": {"tcp.backlog_drop": 400, "udp.rcvbuf_full": 120, "tcp.listen_overflow": 30},
    "deb11-5.10": {"tcp.rcvq_drop": 300, "tcp.listen_overflow": 80, "cpu.backlog_drop": 500},
}
# Rules whose counters this kernel does not have: "not evaluated", never "no drops".
NOT_EVALUATED = {
    "el7-3.10": ("tcp.rcvq_drop", "udp.memory"),  # TCPRcvQDrop/TCPZeroWindowDrop, Udp MemErrors
    "deb10-4.19": ("tcp.rcvq_drop",),
    "deb11-5.10": (),
}
# Counters the kernel lacks: absent or None in the deltas, never 0.
MISSING = {
    "el7-3.10": ("TcpExt.TCPRcvQDrop", "TcpExt.TCPZeroWindowDrop", "Udp.MemErrors", "Udp6.RcvbufErrors",
                 "Ip.OutTransmits", "softnet.cpu1.flow_limit_count", "link.eth0.rx_nohandler"),
    "deb10-4.19": ("TcpExt.TCPRcvQDrop", "TcpExt.TCPZeroWindowDrop", "Ip.OutTransmits", "Ip6.OutTransmits"),
    "deb11-5.10": ("TcpExt.TCPMigrateReqFailure", "Ip.OutTransmits", "softnet.cpu2.dropped"),
}
INTERNAL_ERROR = re.compile(r"^[A-Z][A-Za-z]*(Error|Exception|Exit|Interrupt)\b")


def snapshot_of(tree: Path):
    return take_snapshot(root=str(tree))


def tree_window(before_root: Path, after_root: Path) -> Window:
    before, after = snapshot_of(before_root), snapshot_of(after_root)
    after.monotonic = before.monotonic + WINDOW  # the copies stand for a 5 s window
    return Window(before, after, delta.compute(before, after), listeners={},
                  listener_sampling="unavailable: a copied tree has no live listeners")


@pytest.fixture(scope="module", params=NAMES)
def tree(request):
    name = request.param
    window = tree_window(TREES / name / "before", TREES / name / "after")
    return name, window, diagnosis_from_window(window)


def test_trees_are_what_build_trees_makes(tmp_path):
    """The committed trees are reproducible from the fixtures (no hand edits drift in)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_trees", TREES / "build_trees.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    for name, tree_spec in builder.TREES.items():
        for side in ("before", "after"):
            builder.build_one(name, tree_spec, tmp_path / name / side)
        builder.apply_after(name, tmp_path / name / "after")
        for path in (tmp_path / name).rglob("*"):
            if path.is_file():
                committed = TREES / name / path.relative_to(tmp_path / name)
                assert committed.read_bytes() == path.read_bytes(), committed


# --- coverage: the right status per source, the gap named, no exception ---------------------

def test_coverage_statuses(tree):
    name, window, _ = tree
    coverage = window.before.coverage()
    assert {s: coverage[s] for s in CORE_OK} == dict.fromkeys(CORE_OK, "ok")
    assert {s: coverage[s] for s in EXPECTED[name]} == EXPECTED[name]
    assert set(coverage) == set(SOURCES)
    assert window.before.kernel == window.after.kernel != "unknown"


def test_every_gap_is_named_and_none_is_a_crash(tree):
    _, window, diagnosis = tree
    for snap in (window.before, window.after):
        for source, result in snap.results.items():
            if result.status == "ok":
                continue
            assert result.status in ("unavailable", "needs-privilege", "failed")
            assert result.error and not INTERNAL_ERROR.match(result.error), f"{source}: {result.error}"
    assert {k for k, v in diagnosis.coverage.items() if v != "ok"} <= set(diagnosis.coverage_errors)


# --- the diagnosis of before -> after -----------------------------------------------------------

def test_findings_and_their_drops(tree):
    name, _, diagnosis = tree
    found = {f.id: f for f in diagnosis.findings}
    assert {i: found[i].drops for i in FINDINGS[name] if i in found} == FINDINGS[name]
    for finding_id, drops in FINDINGS[name].items():
        assert found[finding_id].rate_per_s == pytest.approx(drops / WINDOW)
    assert diagnosis.exit_code() == 2
    keys = [(f.benign, SEVERITY_ORDER[f.severity], -f.rate_per_s) for f in diagnosis.findings]
    assert keys == sorted(keys)


def test_missing_counters_are_not_evaluated_never_no_drops(tree):
    name, window, diagnosis = tree
    for rule_id in NOT_EVALUATED[name]:
        assert rule_id in diagnosis.not_evaluated, rule_id
        assert diagnosis.finding(rule_id) is None
    for counter in MISSING[name]:
        assert diagnosis.counter_deltas.get(counter) is None, counter
    # In general: a counter-based rule whose counters all lack a value cannot say "no drops".
    for rule in load_rules():
        if rule.evaluator:
            continue
        values = matching(rule.drop_counters, window.deltas.values)
        if all(v is None for v in values.values()):
            assert rule.id in diagnosis.not_evaluated, rule.id
    assert all(f.drops > 0 for f in diagnosis.findings)


def test_owner_gap_is_visible_in_subjects(tree):
    name, _, diagnosis = tree
    udp = diagnosis.finding("udp.rcvbuf_full")
    if udp is None:
        pytest.skip(f"{name}: no UDP drops in this tree")
    subject = udp.subjects[0]
    assert subject["socket"] in ("0.0.0.0:53", "[::1]:47005")
    assert subject["drops"] == FINDINGS[name]["udp.rcvbuf_full"]
    assert subject["pid"] is None and subject["process"] is None  # owners need the live system
    assert diagnosis.coverage["process_sockets"] == "unavailable"


@pytest.mark.parametrize("name, cpu", [("el7-3.10", 1), ("deb11-5.10", 3)])
def test_softnet_layouts_name_the_right_cpu(name, cpu):
    diagnosis = diagnosis_from_window(tree_window(TREES / name / "before", TREES / name / "after"))
    finding = diagnosis.finding("cpu.backlog_drop")
    assert finding.subjects[0]["cpu"] == cpu  # 3.10: by line; 5.10: by the index column


def test_udp_table_without_drops_column(tmp_path):
    """A kernel printing no per-socket drops: the rule still counts Udp.RcvbufErrors, names
    no socket (unknown, not 'no drops on any socket'), and no udpsock counter appears."""
    for side in ("before", "after"):
        shutil.copytree(TREES / "el7-3.10" / side, tmp_path / side)
        shutil.copy(FIXTURES / "proc_sockets" / "udp_2.6_no_drops", tmp_path / side / "proc" / "net" / "udp")
    diagnosis = diagnosis_from_window(tree_window(tmp_path / "before", tmp_path / "after"))
    assert diagnosis.coverage["udp_sockets"] == "ok"
    assert not any(k.startswith("udpsock.") for k in diagnosis.counter_deltas)
    udp = diagnosis.finding("udp.rcvbuf_full")
    assert udp.drops == 250
    assert not [s for s in udp.subjects if s.get("drops") == 0]  # no socket claimed with 0 drops
    sockets = tree_window(tmp_path / "before", tmp_path / "after").after.data("udp_sockets")
    assert [s.drops for s in sockets] == [None, None]


def test_collect_json_of_a_tree_has_no_fake_zero():
    snap = snapshot_of(TREES / "el7-3.10" / "before")
    document = json.loads(json.dumps(snap.to_dict(), default=str))
    assert "snmp6" not in document["sources"]
    assert "TCPRcvQDrop" not in document["sources"]["netstat"]["TcpExt"]
    assert document["sources"]["snmp"]["Udp"]["RcvbufErrors"] == 48211


# --- UDP sockets: sock_diag, else the files ----------------------------------------------------

DIAG = {name: (FIXTURES / "proc_sockets" / f"udp_diag_{name}.bin").read_bytes() for name in ("inet", "inet6")}
LIVE_FILES = {"proc/net/udp": (FIXTURES / "proc_sockets" / "udp_live").read_bytes(),
              "proc/net/udp6": (FIXTURES / "proc_sockets" / "udp6_live").read_bytes()}
CAPTURE = json.loads((FIXTURES / "proc_sockets" / "udp_diag_capture.json").read_text())


def diag_key(family: int) -> str:
    return f"netlink/4-20-{proc_sockets.udp_diag_request(family).hex()}"


def replayed(answers: dict[str, bytes]) -> ReadContext:
    return ReadContext(root="/nonexistent", live=False, replay=answers)


def by_inode(sockets):
    return sorted(sockets, key=lambda s: s.inode)


def test_sock_diag_gives_what_the_files_give():
    """Same sockets, same instant (capture_udp_diag.py): every field equal, drops included."""
    from_diag = proc_sockets.parse_udp_diag(DIAG["inet"]) + proc_sockets.parse_udp_diag(DIAG["inet6"])
    from_files = (proc_sockets.parse(LIVE_FILES["proc/net/udp"].decode(), 4)
                  + proc_sockets.parse(LIVE_FILES["proc/net/udp6"].decode(), 6))
    assert by_inode(from_diag) == by_inode(from_files)
    assert sorted(s.inode for s in from_diag) == sorted(s["inode"] for s in CAPTURE["sockets"])
    small = next(s for s in from_diag if s.port == 47106)
    assert small.drops > 0 and small.rx_queue > 0  # the 1-byte buffer overflowed
    mapped = next(s for s in from_diag if s.port == 47108)
    assert (mapped.family, mapped.local) == (6, "127.0.0.1")


def test_reader_prefers_sock_diag_and_records_it():
    answers = {diag_key(socket.AF_INET): DIAG["inet"], diag_key(socket.AF_INET6): DIAG["inet6"]}
    sockets = proc_sockets.read_udp(replayed(answers))  # no files in this "bundle" at all
    assert len(sockets) == len(CAPTURE["sockets"])


def test_reader_falls_back_to_files_for_an_old_bundle():
    sockets = proc_sockets.read_udp(replayed(dict(LIVE_FILES)))
    assert by_inode(sockets) == by_inode(proc_sockets.parse(LIVE_FILES["proc/net/udp"].decode(), 4)
                                         + proc_sockets.parse(LIVE_FILES["proc/net/udp6"].decode(), 6))


def _without_drops(reply: bytes) -> bytes:
    """The same dump as a kernel before 4.7 sends it: SK_MEMINFO of 8 values, no drops."""
    out, offset = b"", 0
    while offset < len(reply):
        length, msg_type, flags, seq, pid = struct.unpack_from("=IHHII", reply, offset)
        body = reply[offset + 16: offset + length]
        if msg_type == 20:
            attrs, pos = b"", 72
            while pos < len(body):
                attr_len, attr_type = struct.unpack_from("=HH", body, pos)
                payload = body[pos + 4: pos + attr_len]
                if attr_type == 7:
                    payload = payload[:32]
                attrs += struct.pack("=HH", len(payload) + 4, attr_type) + payload
                attrs += b"\0" * (-len(attrs) % 4)
                pos += (attr_len + 3) & ~3
            body = body[:72] + attrs
        out += struct.pack("=IHHII", len(body) + 16, msg_type, flags, seq, pid) + body
        offset += (length + 3) & ~3
    return out


def test_kernel_without_meminfo_drops_falls_back_to_files():
    old = {diag_key(socket.AF_INET): _without_drops(DIAG["inet"]),
           diag_key(socket.AF_INET6): _without_drops(DIAG["inet6"])}
    assert all(s.drops is None for s in proc_sockets.parse_udp_diag(old[diag_key(socket.AF_INET)]))
    sockets = proc_sockets.read_udp(replayed({**old, **LIVE_FILES}))
    assert all(s.drops is not None for s in sockets)  # from the files' drops column
    assert sum(s.drops for s in sockets) == sum(s.drops for s in proc_sockets.parse_udp_diag(DIAG["inet"]))


def test_no_udp_diag_module_falls_back_to_files():
    enoent = struct.pack("=IHHIIi", 20, 2, 0, 1, 0, -2) + b"\0" * 16  # NLMSG_ERROR -ENOENT
    answers = {diag_key(socket.AF_INET): enoent, diag_key(socket.AF_INET6): enoent, **LIVE_FILES}
    result = read_source(SOURCES["udp_sockets"], replayed(answers))
    assert result.ok and len(result.data) == len(CAPTURE["sockets"])


def test_ipv6_dump_failing_keeps_ipv4_sockets():
    enoent = struct.pack("=IHHIIi", 20, 2, 0, 1, 0, -97) + b"\0" * 16  # EAFNOSUPPORT
    sockets = proc_sockets.read_udp(replayed({diag_key(socket.AF_INET): DIAG["inet"],
                                              diag_key(socket.AF_INET6): enoent}))
    assert sorted(s.port for s in sockets) == [47104, 47106, 47107]


def test_nothing_at_all_is_unavailable_not_empty():
    result = read_source(SOURCES["udp_sockets"], replayed({}))
    assert result.status == "unavailable"
