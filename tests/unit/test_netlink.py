"""netlink.messages / netlink.attributes: the framing under both netlink parsers."""

import errno
import struct
from pathlib import Path

import pytest

from dropdoc import netlink
from dropdoc.errors import ParseError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def nlmsg(msg_type: int, body: bytes, pad: bool = True) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, msg_type, 2, 1, 0) + body + (b"\0" * (-length % 4) if pad else b"")


def nlattr(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (-length % 4)


@pytest.mark.parametrize("name, types", [
    ("tcp_listeners/sock_diag_inet.bin", [20, 20, netlink.NLMSG_DONE]),
    ("tcp_listeners/sock_diag_inet6.bin", [20, 20, netlink.NLMSG_DONE]),
    ("link_stats/rtm_getlink.bin", [16, 16, 16, 16, netlink.NLMSG_DONE]),
])
def test_real_replies_frame_cleanly(name, types):
    reply = (FIXTURES / name).read_bytes()
    found = list(netlink.messages(reply))
    assert [t for t, _ in found] == types
    assert found[-1][1] == b"\0\0\0\0"  # NLMSG_DONE carries an int 0


def test_real_rtm_newlink_attributes():
    reply = (FIXTURES / "link_stats/rtm_getlink.bin").read_bytes()
    bodies = [body for msg_type, body in netlink.messages(reply) if msg_type == 16]
    attrs = dict(netlink.attributes(bodies[0], 16))
    assert attrs[3] == b"lo\0"       # IFLA_IFNAME
    assert len(attrs[23]) == 25 * 8  # IFLA_STATS64 on 6.18
    assert struct.unpack_from("=I", attrs[4])[0] == 65536  # IFLA_MTU of lo


def test_unpadded_last_message_and_padding():
    body = b"abcde"
    assert list(netlink.messages(nlmsg(7, body, pad=False))) == [(7, body)]
    assert list(netlink.messages(nlmsg(7, body) + nlmsg(8, b""))) == [(7, body), (8, b"")]


def test_trailing_zero_bytes_tolerated_but_not_garbage():
    assert [t for t, _ in netlink.messages(nlmsg(7, b"") + b"\0" * 12)] == [7]
    with pytest.raises(ParseError, match="trailing"):
        list(netlink.messages(nlmsg(7, b"") + b"\x01\0\0"))


@pytest.mark.parametrize("buf", [
    struct.pack("=IHHII", 8, 7, 0, 0, 0),            # length below the header size
    struct.pack("=IHHII", 0, 7, 0, 0, 0),            # zero length (would loop forever)
    struct.pack("=IHHII", 64, 7, 0, 0, 0) + b"\0" * 8,  # longer than the buffer
    b"\x01\x02\x03",                                 # not even a header
])
def test_bad_message_lengths(buf):
    with pytest.raises(ParseError):
        list(netlink.messages(buf))


def test_error_with_errno_raises_os_error():
    reply = nlmsg(netlink.NLMSG_ERROR, struct.pack("=i", -errno.EACCES) + b"\0" * 16)
    with pytest.raises(OSError) as info:
        list(netlink.messages(reply))
    assert info.value.errno == errno.EACCES


def test_error_zero_is_an_ack():
    reply = nlmsg(netlink.NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16)
    assert [t for t, _ in netlink.messages(reply)] == [netlink.NLMSG_ERROR]


@pytest.mark.parametrize("code", [-2**31, 5, 2**31 - 1, -4096])
def test_error_with_impossible_code(code):
    # Not a negative errno: a malformed reply, not an OS error (was an OverflowError).
    with pytest.raises(ParseError, match="error code"):
        list(netlink.messages(nlmsg(netlink.NLMSG_ERROR, struct.pack("=i", code))))


def test_attributes():
    buf = nlattr(1, b"x") + nlattr(0x8000 | 2, b"") + nlattr(0x4000 | 3, b"abcd")
    # NLA_F_NESTED / NLA_F_NET_BYTEORDER flags are masked off the type.
    assert list(netlink.attributes(buf)) == [(1, b"x"), (2, b""), (3, b"abcd")]
    assert list(netlink.attributes(b"\0" * 3 + buf, 3)) == list(netlink.attributes(buf))
    assert list(netlink.attributes(b"")) == []
    assert list(netlink.attributes(b"\0\0\0")) == []  # shorter than an attribute header


@pytest.mark.parametrize("buf", [
    struct.pack("=HH", 3, 1) + b"\0" * 4,   # length below the header size
    struct.pack("=HH", 0, 1),               # zero length (would loop forever)
    struct.pack("=HH", 12, 1) + b"\0" * 4,  # longer than the buffer
])
def test_bad_attribute_lengths(buf):
    with pytest.raises(ParseError):
        list(netlink.attributes(buf))
