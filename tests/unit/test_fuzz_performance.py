"""Property tests for the parsers made faster for 100k sockets: they must still return a
result or raise ParseError, and give exactly what the straightforward versions give.

- proc_sockets.parse (column positions looked up once, addresses cached) against the
  by-header dict-per-line parser it replaced (kept here as the reference);
- proc_sockets.parse_udp_diag: the fixed-record fast path (struct.iter_unpack) against the
  general message-by-message path, on real sock_diag replies and mutations of them.
"""

from __future__ import annotations

import ipaddress
import struct

from fuzzing import FUZZ, decode, fixtures, mutated, swap_words, text_edits
from hypothesis import given
from hypothesis import strategies as st

from dropdoc.errors import ParseError
from dropdoc.sources import proc_sockets
from dropdoc.sources.base import parse_int
from dropdoc.sources.proc_sockets import ProcSocket

TEXTS = fixtures("proc_sockets", "tcp", "tcp6", "udp", "udp6", "udp_drops", "udp_2.6_no_drops", "udp6_mapped",
                 "tcp6_established", "udp_live", "udp6_live")
REPLIES = fixtures("proc_sockets", "udp_diag_inet.bin", "udp_diag_inet6.bin")
# words swapped across lines too: rows with more or fewer columns than the header
EDITS = (*text_edits(b"rem_address", b"drops"), swap_words)


# --- the reference: proc_sockets.parse as it was before the fast path --------------------------

def reference_parse_address(text: str) -> tuple[str, int]:
    addr_hex, sep, port_hex = text.partition(":")
    if not sep or len(addr_hex) not in (8, 32):
        raise ParseError(f"bad socket address {text[:50]!r}")
    try:
        raw = bytes.fromhex(addr_hex)
    except ValueError:
        raise ParseError(f"bad socket address {text[:50]!r}") from None
    if len(raw) * 2 != len(addr_hex):
        raise ParseError(f"bad socket address {text[:50]!r}")
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), parse_int(port_hex, "port", 16)


def reference_parse(text: str, family: int) -> list[ProcSocket]:
    lines = text.splitlines()
    if not lines:
        raise ParseError("empty socket table (no header)")
    names = proc_sockets._header_names(lines[0])
    if "local_address" not in names or "inode" not in names:
        raise ParseError(f"unexpected socket table header {lines[0].strip()[:60]!r}")
    needed = max(names.index("local_address"), names.index("inode")) + 1
    sockets = []
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < needed:
            raise ParseError(f"short socket line {line.strip()[:60]!r}")
        row = dict(zip(names, fields))
        local, port = reference_parse_address(row["local_address"])
        remote, remote_port = reference_parse_address(
            row.get("rem_address") or row.get("remote_address") or "00000000:0000")
        tx_hex, _, rx_hex = row.get("tx_queue:rx_queue", "0:0").partition(":")
        sockets.append(ProcSocket(
            family=family, local=local, port=port, remote=remote, remote_port=remote_port,
            state=parse_int(row.get("st", "0"), "st", 16),
            tx_queue=parse_int(tx_hex, "tx_queue", 16), rx_queue=parse_int(rx_hex, "rx_queue", 16),
            uid=parse_int(row.get("uid", "0"), "uid"), inode=parse_int(row["inode"], "inode"),
            drops=parse_int(row["drops"], "drops") if "drops" in row else None,
        ))
    return sockets


def outcome(func, *args):
    try:
        return func(*args)
    except ParseError as exc:
        return ("ParseError", str(exc))


@FUZZ
@given(data=mutated(TEXTS, EDITS), family=st.sampled_from([4, 6]))
def test_proc_parse_is_the_reference_parse(data, family):
    text = decode(data)
    assert outcome(proc_sockets.parse, text, family) == outcome(reference_parse, text, family)


@FUZZ
@given(text=st.text(alphabet="0123456789ABCDEFabcdef:x \n", max_size=200))
def test_proc_parse_on_hex_soup(text):
    header = "sl local_address rem_address st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode drops\n"
    assert outcome(proc_sockets.parse, header + text, 4) == outcome(reference_parse, header + text, 4)


def test_every_table_fixture_parses_like_the_reference():
    for data in TEXTS:
        text = data.decode()
        assert proc_sockets.parse(text, 6) == reference_parse(text, 6)


# --- sock_diag UDP replies: fast records vs the general path ------------------------------------

def general(reply: bytes):
    try:
        return proc_sockets._parse_udp_diag_general(reply)
    except (ParseError, OSError) as exc:
        return exc


@FUZZ
@given(reply=mutated(REPLIES, EDITS) | st.binary(max_size=600))
def test_udp_diag_fast_path_agrees_or_steps_aside(reply):
    fast = proc_sockets._parse_udp_diag_records(reply)
    slow = general(reply)
    if fast is not None:
        assert fast == slow  # never a result where the general parser sees damage
    try:
        result = proc_sockets.parse_udp_diag(reply)
    except OSError as exc:  # an NLMSG_ERROR with an errno, as netlink.messages raises it
        assert isinstance(slow, OSError) and exc.errno == slow.errno
    except ParseError:
        assert isinstance(slow, ParseError)
    else:
        assert result == slow


def test_fast_path_is_taken_on_real_replies():
    for reply in REPLIES:
        fast = proc_sockets._parse_udp_diag_records(reply)
        assert fast is not None and fast == proc_sockets._parse_udp_diag_general(reply)


def test_fast_path_on_a_large_dump_of_one_layout():
    """10k copies of one real record (as a 100k-socket dump looks) plus NLMSG_DONE."""
    reply = REPLIES[0]
    length = struct.unpack_from("=I", reply)[0]
    record = bytearray(reply[:length])
    records = []
    for inode in range(1, 10_001):
        struct.pack_into("=I", record, 16 + 68, inode)  # idiag_inode
        records.append(bytes(record))
    done = struct.pack("=IHHIIi", 20, 3, 2, 1, 0, 0)
    big = b"".join(records) + done
    fast = proc_sockets._parse_udp_diag_records(big)
    assert fast is not None and [s.inode for s in fast] == list(range(1, 10_001))
    assert fast == proc_sockets._parse_udp_diag_general(big)
    # One record of another length in the middle: the general path takes over, same answer.
    odd = big[:length * 5000] + reply[length:] + big[length * 5000:]
    assert proc_sockets._parse_udp_diag_records(odd) is None or \
        proc_sockets._parse_udp_diag_records(odd) == proc_sockets._parse_udp_diag_general(odd)
