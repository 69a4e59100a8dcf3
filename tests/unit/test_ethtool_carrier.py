"""link_stats additions for the link layer: carrier changes (link flaps) per device, from the
captured RTM_GETLINK dump (IFLA_CARRIER_*) and from sysfs files in a copied tree."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import link_stats
from dropdoc.sources.base import ReadContext
from dropdoc.sources.link_stats import (IFLA_CARRIER_CHANGES, IFLA_CARRIER_DOWN_COUNT, IFLA_CARRIER_UP_COUNT,
                                        IFLA_IFNAME, IFLA_STATS64, RTM_NEWLINK)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REPLY = (FIXTURES / "link_stats" / "rtm_getlink.bin").read_bytes()


def nlmsg(msg_type: int, body: bytes) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, msg_type, 2, 1, 0) + body + b"\0" * (-length % 4)


def nlattr(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (-length % 4)


def link(name: bytes, *attrs: bytes) -> bytes:
    return nlmsg(RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 7, 0x1043, 0) + nlattr(IFLA_IFNAME, name + b"\0")
                 + b"".join(attrs))


def u32(attr_type: int, value: int) -> bytes:
    return nlattr(attr_type, struct.pack("=I", value))


def test_real_dump_carrier_counts():
    flaps = link_stats.parse_rtnl_carrier(REPLY)
    assert list(flaps) == ["lo", "ifb0", "ifb1", "eth0"]
    # eth0 came up once at boot (down then up): the same numbers as /sys/class/net/eth0/carrier_*
    assert flaps["eth0"] == {"carrier_changes": 2, "carrier_up_count": 1, "carrier_down_count": 1}
    assert flaps["ifb0"] == {"carrier_changes": 0, "carrier_up_count": 0, "carrier_down_count": 0}


def test_statistics_parser_unchanged_by_the_carrier_attributes():
    assert all("carrier_changes" not in table for table in link_stats.parse_rtnl_links(REPLY).values())


def test_old_kernels_lack_up_down_counts_or_everything():
    # 3.15-4.15: IFLA_CARRIER_CHANGES only; before 3.15: none (absent, never 0)
    reply = (link(b"eth1", u32(IFLA_CARRIER_CHANGES, 6)) + link(b"eth2", nlattr(IFLA_STATS64, b"\0" * 184)))
    assert link_stats.parse_rtnl_carrier(reply) == {"eth1": {"carrier_changes": 6}}


def test_all_three_attributes():
    reply = link(b"eth3", u32(IFLA_CARRIER_CHANGES, 7), u32(IFLA_CARRIER_UP_COUNT, 4),
                 u32(IFLA_CARRIER_DOWN_COUNT, 3))
    assert link_stats.parse_rtnl_carrier(reply)["eth3"] == {
        "carrier_changes": 7, "carrier_up_count": 4, "carrier_down_count": 3}


def test_short_carrier_attribute():
    with pytest.raises(ParseError, match="carrier_changes attribute of 2 bytes"):
        link_stats.parse_rtnl_carrier(link(b"eth1", nlattr(IFLA_CARRIER_CHANGES, b"\1\0")))


def test_counters_name_the_flaps_per_device():
    flat = link_stats.counters({"eth0": {"rx_packets": 5, "carrier_changes": 2, "carrier_down_count": 1}})
    assert flat["link.eth0.carrier_changes"] == 2 and flat["link.eth0.carrier_down_count"] == 1


def test_sysfs_tree_with_and_without_carrier_files(tmp_path):
    for ifname, carrier in (("eth0", {"carrier_changes": "4\n", "carrier_up_count": "2\n",
                                      "carrier_down_count": "2\n"}),
                            ("old0", {"carrier_changes": "9\n"}), ("ancient0", {})):
        stats = tmp_path / "sys" / "class" / "net" / ifname / "statistics"
        stats.mkdir(parents=True)
        (stats / "rx_crc_errors").write_text("3\n")
        for name, text in carrier.items():
            (stats.parent / name).write_text(text)
    links = link_stats.read(ReadContext(root=str(tmp_path), live=False))
    assert links["eth0"] == {"rx_crc_errors": 3, "carrier_changes": 4, "carrier_up_count": 2,
                             "carrier_down_count": 2}
    assert links["old0"] == {"rx_crc_errors": 3, "carrier_changes": 9}
    assert links["ancient0"] == {"rx_crc_errors": 3}


def test_sysfs_garbage_carrier_file(tmp_path):
    stats = tmp_path / "sys" / "class" / "net" / "eth0" / "statistics"
    stats.mkdir(parents=True)
    (stats.parent / "carrier_changes").write_text("lots\n")
    with pytest.raises(ParseError, match="eth0/carrier_changes"):
        link_stats.read(ReadContext(root=str(tmp_path), live=False))


def test_netlink_replay_merges_the_carrier_counts():
    # The key ReadContext.netlink_dump records for the request link_stats sends.
    request = link_stats._IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    key = f"netlink/0-{link_stats.RTM_GETLINK}-{request.hex()}"
    ctx = ReadContext(root="/nonexistent", live=False, sysfs_is_local=False, replay={key: REPLY})
    links = link_stats.read(ctx)
    assert links["eth0"]["carrier_changes"] == 2 and links["eth0"]["rx_packets"] == 514
    assert links["lo"]["carrier_down_count"] == 0
