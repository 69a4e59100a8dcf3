"""Property tests for the transport area's parsers: whatever a kernel file or sock_diag
reply holds, they return a result or raise ParseError - nothing else (the documented
exception: netlink.messages raises OSError for an NLMSG_ERROR carrying an errno).

Inputs: random text/bytes, text from the format's own alphabet, mutations of the real
fixtures (truncation, byte flips, insertions, dropped/duplicated/swapped lines), and
well-framed netlink messages with random bodies so the body parsers are reached.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc.errors import ParseError
from dropdoc.sources import socket_memory, sockstat, tcp_syn_recv

HERE = Path(__file__).resolve().parent.parent / "fixtures" / "sockstat"
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fixture(name: str) -> bytes:
    return (HERE / name).read_bytes()


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "lines"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b" ", b"\n", b":", b"\t", b"-1", b"0x", b"\xff\xfe", b"\x00", b"\xc2\xb2", b" mem", b"TCP:"]))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "lines":
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            how = draw(st.sampled_from(["drop", "dup", "swap"]))
            if how == "drop":
                del lines[i]
            elif how == "dup":
                lines.insert(i, lines[j])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")  # what errors.read_text does


SOCKSTAT_SEEDS = [fixture(n) for n in ("sockstat", "sockstat6", "sockstat_netns", "sockstat_netns_busy",
                                       "sockstat_2.6.18", "sockstat_3.10", "sockstat6_3.10",
                                       "sockstat_tcp_pressure")]


@FUZZ
@given(text=st.one_of(st.text(max_size=200),
                      st.text(alphabet="TCPUDLIERAWFGsocketmuinorphtwal: \n-0123456789", max_size=300),
                      mutated(SOCKSTAT_SEEDS).map(decode)))
def test_sockstat_parse_raises_only_parse_error(text):
    try:
        tables = sockstat.parse(text)
    except ParseError:
        return
    assert tables and all(isinstance(v, int) for t in tables.values() for v in t.values())
    assert all(" " not in section and section for section in tables)


@FUZZ
@given(text=st.one_of(st.text(max_size=60), st.text(alphabet="0123456789 \t\n-", max_size=60),
                      mutated([fixture("root/proc/sys/net/ipv4/tcp_mem"),
                               fixture("root/proc/sys/net/ipv4/udp_mem")]).map(decode)))
def test_sockstat_parse_limit_raises_only_parse_error(text):
    try:
        low, pressure, high = sockstat.parse_limit(text, "net.ipv4.tcp_mem")
    except ParseError:
        return
    assert min(low, pressure, high) >= 0


def netlink_call(parser: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return parser(data)
    except ParseError:
        return None
    except OSError as exc:  # documented: NLMSG_ERROR with a negative errno
        assert exc.errno is not None and 0 < exc.errno < 4096
        return None


def nl_message(msg_type: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, 2, 1, 0) + body


DIAG_SEEDS = [fixture(n) for n in ("sock_diag_syn_recv_inet.bin", "sock_diag_tcp_mem_inet.bin",
                                   "sock_diag_udp_mem_inet.bin", "sock_diag_udp_mem_inet6.bin")]
# inet_diag_msg-shaped bodies: a valid family most of the time, any state, random tail
diag_body = st.builds(lambda family, state, rest: bytes([family, state]) + rest,
                      st.sampled_from([2, 10, 2, 10, 0, 7]), st.integers(0, 255),
                      st.binary(min_size=0, max_size=140))
diag_inputs = st.one_of(
    st.binary(max_size=300),
    mutated(DIAG_SEEDS),
    st.lists(st.tuples(st.sampled_from([2, 3, 20, 20, 20]), diag_body), max_size=4)
    .map(lambda msgs: b"".join(nl_message(t, b).ljust((16 + len(b) + 3) & ~3, b"\0") for t, b in msgs)),
)


@FUZZ
@given(data=diag_inputs)
def test_syn_recv_reply_raises_only_parse_error(data):
    entries = netlink_call(tcp_syn_recv.parse_diag_reply, data)
    if entries is not None:
        assert all(e.family in (4, 6) and e.count > 0 and 0 <= e.port < 65536 for e in entries)
        assert all(e.peer_count >= len(e.peers) for e in entries)


@FUZZ
@given(data=diag_inputs, proto=st.sampled_from(["tcp", "udp"]))
def test_socket_memory_reply_raises_only_parse_error(data, proto):
    sockets = netlink_call(lambda b: socket_memory.parse_diag_reply(b, proto), data)
    if sockets is not None:
        assert all(s.family in (4, 6) and s.proto == proto and s.memory >= 0 for s in sockets)
        assert all(s.drops is None or s.drops >= 0 for s in sockets)
