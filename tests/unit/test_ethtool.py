"""ethtool source: pure parsers over SIOCETHTOOL reply buffers captured on this machine
(virtio_net eth0, ifb, a lab veth) plus hand-made NICs (ENA, ixgbe, an old e1000e) and
broken variants. Provenance: tests/fixtures/ethtool/README.md."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from dropdoc.errors import ParseError, SourceUnavailable
from dropdoc.sources import ethtool
from dropdoc.sources.base import ReadContext, read_source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ethtool"
HANDMADE = json.loads((FIXTURES / "handmade.json").read_text())
PARTS = ("drvinfo", "sset_info", "strings", "stats", "ring", "channels", "link")


def buf(device: str, part: str) -> bytes:
    return (FIXTURES / device / f"{part}.bin").read_bytes()


def record_of(device: str) -> dict:
    """The recorded (hex) form, rebuilt from the captured .bin files."""
    return {part: (FIXTURES / device / f"{part}.bin").read_bytes().hex() if (FIXTURES / device / f"{part}.bin").exists()
            else None for part in PARTS}


def ethtool_program_stats(device: str) -> list[tuple[str, int]]:
    """What `ethtool -S` printed right after the capture (test oracle only)."""
    lines = (FIXTURES / device / "ethtool-S.txt").read_text().splitlines()
    assert lines[0] == "NIC statistics:"
    return [(m.group(1), int(m.group(2))) for m in (re.match(r"^\s+(.+): (\d+)$", line) for line in lines[1:])]


# --- captured buffers -----------------------------------------------------------------------

def test_virtio_drvinfo_and_stat_count():
    info = ethtool.parse_drvinfo(buf("eth0", "drvinfo"))
    assert (info.driver, info.version, info.bus_info, info.fw_version) == ("virtio_net", "1.0.0", "0000:00:03.0", "")
    assert info.n_stats == 20
    assert ethtool.parse_sset_count(buf("eth0", "sset_info")) == 20


def test_virtio_names_and_values_match_the_ethtool_program():
    names = ethtool.parse_strings(buf("eth0", "strings"))
    values = ethtool.parse_stats(buf("eth0", "stats"))
    printed = ethtool_program_stats("eth0")
    assert names == [name for name, _ in printed]
    assert names[:3] == ["rx_drops", "rx_xdp_packets", "rx_xdp_tx"] and names[-1] == "tx0_tx_timeouts"
    for (name, ours), (_, theirs) in zip(zip(names, values), printed):
        assert ours <= theirs, name  # `ethtool -S` ran a moment later: counters only grew
        if "kicks" not in name:
            assert ours == theirs == 0, name
    assert values[names.index("rx_kicks")] == values[names.index("rx0_kicks")] > 0


def test_virtio_ring_channels_link_match_the_ethtool_program():
    ring = ethtool.parse_ring(buf("eth0", "ring"))
    assert (ring.rx, ring.rx_max, ring.tx, ring.tx_max) == (256, 256, 256, 256)
    assert (ring.rx_mini_max, ring.rx_jumbo_max) == (0, 0)  # printed as n/a
    text = (FIXTURES / "eth0" / "ethtool-g.txt").read_text()
    assert re.findall(r"^RX:\s+(\d+)", text, re.M) == ["256", "256"]
    channels = ethtool.parse_channels(buf("eth0", "channels"))
    assert (channels.combined, channels.max_combined, channels.rx, channels.max_rx) == (1, 1, 0, 0)
    assert ethtool.parse_link(buf("eth0", "link")) is True


def test_veth_statistics_channels_and_no_ring():
    nic = ethtool.parse_record(record_of("veth"))
    assert nic.driver == "veth" and nic.bus_info == ""
    assert list(nic.stats) == [name for name, _ in ethtool_program_stats("veth")]
    assert nic.stats["peer_ifindex"] == 2
    assert nic.stats["rx_queue_0_xdp_drops"] == 0 and "tx_queue_0_xdp_xmit_errors" in nic.stats
    assert nic.ring is None  # veth has no ring parameters (EOPNOTSUPP): None, never 0
    assert (nic.channels.max_rx, nic.channels.max_tx, nic.channels.rx, nic.channels.tx) == (2, 2, 1, 1)
    assert nic.channels.max_combined == 0
    assert nic.link is False  # captured while the peer was down


def test_veth_drvinfo_ignores_bytes_after_the_terminator():
    # The kernel left old bytes after "1.0\0" in the version field: only the C string counts.
    raw = buf("veth", "drvinfo")
    assert b"1.0\x00.44" in raw
    assert ethtool.parse_drvinfo(raw).version == "1.0"


def test_recorded_host_namespace():
    recorded = json.loads((FIXTURES / "recorded_host.json").read_text())
    data = ethtool.parse(recorded)
    assert set(data.interfaces) == {"eth0", "ifb0", "ifb1"}
    assert data.skipped == {"lo": "no ethtool support (EOPNOTSUPP)"}
    assert data.interfaces["ifb0"].driver == "ifb"
    assert list(data.interfaces["ifb0"].stats) == ["rx_queue_0_packets", "rx_queue_0_bytes",
                                                    "tx_queue_0_packets", "tx_queue_0_bytes"]
    assert data.interfaces["ifb0"].ring is None and data.interfaces["ifb0"].channels is None
    assert recorded["interfaces"]["ifb0"]["errors"]["ring"] == "EOPNOTSUPP"
    assert data.interfaces["eth0"] == ethtool.parse_record(record_of("eth0"))
    flat = ethtool.counters(data)
    assert flat["ethtool.eth0.rx_kicks"] == data.interfaces["eth0"].stats["rx_kicks"]
    assert flat["ethtool.ifb1.tx_queue_0_bytes"] == 0
    assert not any(name.startswith("ethtool.lo.") for name in flat)


def test_counters_leave_out_gauges_and_make_names_unambiguous():
    veth = ethtool.parse_record(record_of("veth"))
    odd = ethtool.Nic("i40e", "", {"port.rx_dropped": 7, "rx_dropped": 3, "[0]: rx bytes": 9})
    flat = ethtool.counters(ethtool.EthtoolData({"eth0.100": veth, "eth1": odd}))
    assert "ethtool.eth0.100.peer_ifindex" not in flat  # an ifindex, not a counter
    assert flat["ethtool.eth0.100.rx_queue_0_drops"] == 0
    # the device is what sits between the first dot and the last one
    assert flat["ethtool.eth1.port_rx_dropped"] == 7 and flat["ethtool.eth1.rx_dropped"] == 3
    assert flat["ethtool.eth1.[0]:_rx_bytes"] == 9
    for name in flat:
        assert name.rsplit(".", 1)[1].count(".") == 0


# --- hand-made NICs --------------------------------------------------------------------------

def test_handmade_ena_allowance_counters_and_gauge():
    nic = ethtool.parse_record(HANDMADE["ena"])
    assert nic.driver == "ena"
    assert nic.stats["pps_allowance_exceeded"] == 95321
    assert nic.stats["bw_in_allowance_exceeded"] == 18342
    assert nic.stats["queue_1_rx_cnt"] == 91_234_567
    assert (nic.ring.rx, nic.ring.rx_max) == (1024, 16384)
    assert (nic.channels.combined, nic.channels.max_combined) == (4, 4)
    flat = ethtool.counters(ethtool.EthtoolData({"eth0": nic}))
    assert flat["ethtool.eth0.linklocal_allowance_exceeded"] == 12
    assert "ethtool.eth0.conntrack_allowance_available" not in flat  # a gauge


def test_old_kernel_without_sset_info_channels_or_link():
    record = HANDMADE["e1000e_old"]
    assert record["sset_info"] is None
    nic = ethtool.parse_record(record)
    assert ethtool.parse_drvinfo(bytes.fromhex(record["drvinfo"])).n_stats == len(nic.stats) == 49
    assert nic.channels is None and nic.link is None  # unknown, not 0/False
    assert nic.stats["rx_crc_errors"] == 57 and nic.stats["rx_no_buffer_count"] == 3


def test_sset_info_without_the_stats_set_is_none():
    reply = struct.pack("=IIQ", ethtool.ETHTOOL_GSSET_INFO, 0, 0)
    assert ethtool.parse_sset_count(reply) is None


def test_duplicate_and_empty_names():
    names = ["rx_errors", "", "rx_errors", "rx_errors"]
    assert ethtool.named_stats(names, [1, 2, 3, 4]) == {"rx_errors": 1, "rx_errors#2": 3, "rx_errors#3": 4}


def test_name_of_exactly_32_bytes_has_no_terminator():
    name = "x" * 32
    reply = struct.pack("=III", ethtool.ETHTOOL_GSTRINGS, 1, 1) + name.encode()
    assert ethtool.parse_strings(reply) == [name]


# --- broken input ----------------------------------------------------------------------------

@pytest.mark.parametrize("part,parser", [
    ("drvinfo", ethtool.parse_drvinfo), ("strings", ethtool.parse_strings), ("stats", ethtool.parse_stats),
    ("ring", ethtool.parse_ring), ("channels", ethtool.parse_channels), ("link", ethtool.parse_link),
    ("sset_info", ethtool.parse_sset_count),
])
def test_every_truncation_raises_parse_error(part, parser):
    full = buf("eth0", part)
    for cut in range(len(full)):
        with pytest.raises(ParseError):
            parser(full[:cut])


@pytest.mark.parametrize("part,parser", [
    ("drvinfo", ethtool.parse_drvinfo), ("strings", ethtool.parse_strings), ("stats", ethtool.parse_stats),
    ("ring", ethtool.parse_ring), ("channels", ethtool.parse_channels), ("link", ethtool.parse_link),
])
def test_reply_for_another_command_is_rejected(part, parser):
    wrong = struct.pack("=I", 0x42) + buf("eth0", part)[4:]
    with pytest.raises(ParseError, match="command 0x42"):
        parser(wrong)


def test_strings_of_another_string_set_rejected():
    reply = bytearray(buf("eth0", "strings"))
    reply[4] = 0  # ETH_SS_TEST
    with pytest.raises(ParseError, match="string set 0"):
        ethtool.parse_strings(bytes(reply))


def test_absurd_count_rejected_without_allocating():
    with pytest.raises(ParseError, match="announced"):
        ethtool.parse_stats(struct.pack("=II", ethtool.ETHTOOL_GSTATS, 0xFFFFFFFF))


def test_names_and_values_of_different_lengths():
    record = record_of("eth0")
    record["stats"] = buf("veth", "stats").hex()  # 10 values for 20 names
    with pytest.raises(ParseError, match="20 statistic names but 10 values"):
        ethtool.parse_record(record)


@pytest.mark.parametrize("change", [
    {"drvinfo": None}, {"drvinfo": "zz"}, {"drvinfo": 12}, {"stats": None}, {"strings": None},
    {"ring": "10000000"}, {"link": buf("eth0", "ring").hex()},
])
def test_broken_records(change):
    with pytest.raises(ParseError):
        ethtool.parse_record({**record_of("eth0"), **change})


def test_one_broken_interface_is_skipped_with_its_reason():
    recorded = json.loads((FIXTURES / "recorded_host.json").read_text())
    recorded["interfaces"]["ifb1"]["stats"] = recorded["interfaces"]["ifb1"]["stats"][:-2]
    data = ethtool.parse(recorded)
    assert set(data.interfaces) == {"eth0", "ifb0"}
    assert data.skipped["ifb1"].startswith("unreadable reply: ETHTOOL_GSTATS")
    assert data.skipped["lo"] == "no ethtool support (EOPNOTSUPP)"


@pytest.mark.parametrize("recorded", [None, [], {}, {"interfaces": []}, {"interfaces": {}, "skipped": []}])
def test_malformed_recording(recorded):
    with pytest.raises(ParseError):
        ethtool.parse(recorded)


# --- reading through the context -------------------------------------------------------------

def test_replay_goes_through_the_same_parsers():
    raw = (FIXTURES / "recorded_host.json").read_bytes()
    ctx = ReadContext(root="/nonexistent", live=False, replay={"json/ethtool": raw})
    result = read_source(ethtool.SOURCE, ctx)
    assert result.ok
    assert result.data.interfaces["eth0"].ring.rx == 256
    assert result.data == ethtool.parse(json.loads(raw))


def test_replay_of_a_bundle_without_ethtool_is_unavailable():
    ctx = ReadContext(root="/nonexistent", live=False, replay={})
    assert read_source(ethtool.SOURCE, ctx).status == "unavailable"


def test_copied_tree_has_no_driver_statistics(tmp_path):
    ctx = ReadContext(root=str(tmp_path), live=False)
    with pytest.raises(SourceUnavailable, match="live system"):
        ethtool.read(ctx)
    assert read_source(ethtool.SOURCE, ctx).status == "unavailable"
