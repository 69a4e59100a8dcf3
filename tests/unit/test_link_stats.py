"""link_stats: sysfs statistics/ files and the RTM_GETLINK dump (IFLA_STATS64).

rtm_getlink.bin and sys/<ifname>/ were captured at the same instant by
tests/fixtures/capture_netlink.py.
"""

import errno
import struct
from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import link_stats
from dropdoc.sources.link_stats import IFLA_IFNAME, IFLA_STATS64, RTM_NEWLINK, STATS64_FIELDS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REPLY = (FIXTURES / "link_stats" / "rtm_getlink.bin").read_bytes()


def sys_files(ifname: str) -> dict[str, str]:
    statdir = FIXTURES / "link_stats" / "sys" / ifname
    return {p.name: p.read_text() for p in statdir.iterdir()}


def nlmsg(msg_type: int, body: bytes) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, msg_type, 2, 1, 0) + body + b"\0" * (-length % 4)


def nlattr(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (-length % 4)


def link(name: bytes | None, stats: tuple[int, ...] | None, extra: bytes = b"") -> bytes:
    body = struct.pack("=BxHiII", 0, 1, 7, 0x1043, 0)
    if name is not None:
        body += nlattr(IFLA_IFNAME, name + b"\0")
    body += extra
    if stats is not None:
        body += nlattr(IFLA_STATS64, struct.pack(f"={len(stats)}Q", *stats))
    return nlmsg(RTM_NEWLINK, body)


DONE = nlmsg(3, struct.pack("=i", 0))


# --- real dump ---------------------------------------------------------------------------

def test_real_dump_interfaces_and_values():
    links = link_stats.parse_rtnl_links(REPLY)
    assert list(links) == ["lo", "ifb0", "ifb1", "eth0"]
    # 6.18 sends all 25 fields, up to rx_otherhost_dropped.
    assert all(list(table) == list(STATS64_FIELDS) for table in links.values())
    assert links["eth0"]["rx_packets"] == 514
    assert links["eth0"]["rx_bytes"] == 17294484
    assert links["eth0"]["tx_packets"] == 375
    assert links["eth0"]["rx_missed_errors"] == 0
    assert links["lo"]["rx_packets"] == links["lo"]["tx_packets"] == 29
    assert links["lo"]["rx_otherhost_dropped"] == 0


def test_real_dump_agrees_with_sysfs_of_the_same_instant():
    links = link_stats.parse_rtnl_links(REPLY)
    for ifname in ("lo", "eth0", "ifb0"):
        from_sys = link_stats.parse_statistics_files(sys_files(ifname), ifname)
        assert {k: links[ifname][k] for k in from_sys} == from_sys


# --- sysfs statistics/ ---------------------------------------------------------------------

def test_real_sysfs_files():
    stats = link_stats.parse_statistics_files(sys_files("eth0"), "eth0")
    assert len(stats) == 24
    assert stats["rx_bytes"] == 17294484
    assert stats["rx_packets"] == 514
    assert stats["tx_bytes"] == 45706
    assert stats["rx_missed_errors"] == 0
    # 6.18 has no sysfs file for rx_otherhost_dropped: absent, not 0.
    assert "rx_otherhost_dropped" not in stats
    counters = link_stats.counters({"eth0": stats})
    assert counters.get("link.eth0.rx_otherhost_dropped") is None
    assert counters["link.eth0.rx_fifo_errors"] == 0


def test_sysfs_missing_files_are_absent():
    # A driver refusing one counter (read skips it): that counter is simply missing.
    files = sys_files("eth0")
    del files["rx_missed_errors"]
    stats = link_stats.parse_statistics_files(files, "eth0")
    assert "rx_missed_errors" not in stats and stats["rx_packets"] == 514


@pytest.mark.parametrize("content", ["", "\n", "N/A\n", "12 13\n", "0x10\n", "1.5\n", "\ufffd\ufffd"])
def test_sysfs_bad_value(content):
    with pytest.raises(ParseError, match="eth0/statistics/rx_dropped"):
        link_stats.parse_statistics_files({"rx_dropped": content, "rx_packets": "5\n"}, "eth0")


def test_sysfs_large_value():
    assert link_stats.parse_statistics_files({"rx_bytes": "18446744073709551615\n"}) == {"rx_bytes": 2**64 - 1}


# --- crafted dumps -------------------------------------------------------------------------

def test_old_kernel_stats64_without_newer_fields():
    # Kernels before rx_nohandler (4.6) send 23 fields.
    reply = link(b"eth1", tuple(range(1, 24))) + DONE
    stats = link_stats.parse_rtnl_links(reply)["eth1"]
    assert len(stats) == 23
    assert stats["rx_packets"] == 1
    assert stats["rx_missed_errors"] == 16
    assert "rx_nohandler" not in stats and "rx_otherhost_dropped" not in stats


def test_future_kernel_extra_fields_ignored():
    stats = link_stats.parse_rtnl_links(link(b"eth1", tuple(range(1, 30))) + DONE)["eth1"]
    assert list(stats) == list(STATS64_FIELDS)
    assert stats["rx_otherhost_dropped"] == 25


def test_link_without_stats_or_name_is_skipped():
    reply = link(b"nostats", None) + link(None, (1,) * 25) + link(b"ok", (2,) * 25) + DONE
    assert list(link_stats.parse_rtnl_links(reply)) == ["ok"]


def test_other_attributes_and_messages_ignored():
    extra = nlattr(4, struct.pack("=I", 1500)) + nlattr(0x8000 | 26, b"")  # MTU, nested AF_SPEC
    reply = nlmsg(24, b"\0" * 12) + link(b"eth2", (9,) * 25, extra) + DONE
    assert link_stats.parse_rtnl_links(reply)["eth2"]["rx_packets"] == 9


def test_non_utf8_ifname_replaced():
    links = link_stats.parse_rtnl_links(link(b"et\xffh", (1,) * 25) + DONE)
    assert list(links) == ["et\ufffdh"]


def test_empty_reply():
    assert link_stats.parse_rtnl_links(b"") == {}
    assert link_stats.parse_rtnl_links(DONE) == {}


def test_short_ifinfomsg():
    with pytest.raises(ParseError, match="shorter than ifinfomsg"):
        link_stats.parse_rtnl_links(nlmsg(RTM_NEWLINK, b"\0" * 8))


def test_attribute_running_past_message():
    body = struct.pack("=BxHiII", 0, 1, 7, 0, 0) + struct.pack("=HH", 200, IFLA_STATS64) + b"\0" * 8
    with pytest.raises(ParseError, match="attribute"):
        link_stats.parse_rtnl_links(nlmsg(RTM_NEWLINK, body))


def test_error_message_raises_os_error():
    # Documented netlink.messages contract: NLMSG_ERROR with an errno raises OSError.
    with pytest.raises(OSError) as info:
        link_stats.parse_rtnl_links(nlmsg(2, struct.pack("=i", -errno.EPERM) + b"\0" * 16))
    assert info.value.errno == errno.EPERM


def test_every_truncation_of_the_real_dump():
    """Cut anywhere: a ParseError, or (cut at a message boundary) the links before the cut."""
    full = link_stats.parse_rtnl_links(REPLY)
    for cut in range(len(REPLY)):
        try:
            links = link_stats.parse_rtnl_links(REPLY[:cut])
        except ParseError:
            continue
        assert list(links) == list(full)[:len(links)]
        assert all(links[name] == full[name] for name in links)
