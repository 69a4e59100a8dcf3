"""Property tests for the transport area's parsers: whatever a kernel file or sock_diag
reply holds, they return a result or raise ParseError - nothing else (the documented
exception: netlink.messages raises OSError for an NLMSG_ERROR carrying an errno).

Inputs: random text/bytes, text from the format's own alphabet, mutations of the real
fixtures (truncation, byte flips, insertions, dropped/duplicated/swapped lines), and
well-framed netlink messages with random bodies so the body parsers are reached.
"""

from __future__ import annotations

from fuzzing import FUZZ, REFUSED, fixtures, mutated, nl_messages, parse_or_refuse, text_edits, text_inputs
from hypothesis import given
from hypothesis import strategies as st

from dropdoc.sources import socket_memory, sockstat, tcp_syn_recv

EDITS = text_edits(b" mem", b"TCP:")

SOCKSTAT_SEEDS = fixtures("sockstat", "sockstat", "sockstat6", "sockstat_netns", "sockstat_netns_busy",
                          "sockstat_2.6.18", "sockstat_3.10", "sockstat6_3.10", "sockstat_tcp_pressure")


@FUZZ
@given(text=text_inputs(SOCKSTAT_SEEDS, "TCPUDLIERAWFGsocketmuinorphtwal: \n-0123456789", edits=EDITS))
def test_sockstat_parse_raises_only_parse_error(text):
    tables = parse_or_refuse(sockstat.parse, text)
    if tables is not REFUSED:
        assert tables and all(isinstance(v, int) for t in tables.values() for v in t.values())
        assert all(" " not in section and section for section in tables)


@FUZZ
@given(text=text_inputs(fixtures("sockstat/root/proc/sys/net/ipv4", "tcp_mem", "udp_mem"), "0123456789 \t\n-",
                        edits=EDITS, max_size=60))
def test_sockstat_parse_limit_raises_only_parse_error(text):
    limit = parse_or_refuse(sockstat.parse_limit, text, "net.ipv4.tcp_mem")
    if limit is not REFUSED:
        assert min(limit) >= 0 and len(limit) == 3


DIAG_SEEDS = fixtures("sockstat", "sock_diag_syn_recv_inet.bin", "sock_diag_tcp_mem_inet.bin",
                      "sock_diag_udp_mem_inet.bin", "sock_diag_udp_mem_inet6.bin")
# inet_diag_msg-shaped bodies: a valid family most of the time, any state, random tail
diag_body = st.builds(lambda family, state, rest: bytes([family, state]) + rest,
                      st.sampled_from([2, 10, 2, 10, 0, 7]), st.integers(0, 255),
                      st.binary(min_size=0, max_size=140))
diag_inputs = st.one_of(
    st.binary(max_size=300),
    mutated(DIAG_SEEDS, EDITS),
    nl_messages([2, 3, 20, 20, 20], diag_body),
)


@FUZZ
@given(data=diag_inputs)
def test_syn_recv_reply_raises_only_parse_error(data):
    entries = parse_or_refuse(tcp_syn_recv.parse_diag_reply, data, netlink=True)
    if entries is not REFUSED:
        assert all(e.family in (4, 6) and e.count > 0 and 0 <= e.port < 65536 for e in entries)
        assert all(e.peer_count >= len(e.peers) for e in entries)


@FUZZ
@given(data=diag_inputs, proto=st.sampled_from(["tcp", "udp"]))
def test_socket_memory_reply_raises_only_parse_error(data, proto):
    sockets = parse_or_refuse(lambda b: socket_memory.parse_diag_reply(b, proto), data, netlink=True)
    if sockets is not REFUSED:
        assert all(s.family in (4, 6) and s.proto == proto and s.memory >= 0 for s in sockets)
        assert all(s.drops is None or s.drops >= 0 for s in sockets)
