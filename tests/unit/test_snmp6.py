"""snmp6.parse on /proc/net/snmp6: real 6.18 capture, a 3.10-era layout, broken files."""

from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import snmp6

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def text(relpath: str) -> str:
    return (FIXTURES / relpath).read_bytes().decode("utf-8", errors="replace")


def test_real_values_and_section_split():
    counters = snmp6.parse(text("snmp6/snmp6"))
    assert len(counters) == 90
    assert counters["Ip6.InReceives"] == 1
    assert counters["Ip6.OutRequests"] == 10
    assert counters["Ip6.OutTransmits"] == 10
    assert counters["Ip6.InOctets"] == 128
    assert counters["Ip6.OutOctets"] == 880
    assert counters["Icmp6.OutMsgs"] == 9
    assert counters["Icmp6.OutNeighborSolicits"] == 4
    assert counters["Icmp6.OutType135"] == 4
    assert counters["Udp6.RcvbufErrors"] == 0
    assert counters["Udp6.MemErrors"] == 0


def test_udplite6_is_not_split_as_udp6():
    counters = snmp6.parse(text("snmp6/snmp6"))
    assert counters["UdpLite6.InDatagrams"] == 0
    assert "Udp6.Lite6InDatagrams" not in counters
    assert not any(key.startswith("UdpLite6") and "." not in key for key in counters)
    assert {key.split(".")[0] for key in counters} == {"Ip6", "Icmp6", "Udp6", "UdpLite6"}


def test_3_10_lacks_newer_counters():
    counters = snmp6.parse(text("snmp6/snmp6_3.10"))
    assert counters["Ip6.InReceives"] == 2231844
    assert counters["Udp6.RcvbufErrors"] == 907
    assert counters["Udp6.InErrors"] == 907
    for key in ("Udp6.MemErrors", "Udp6.IgnoredMulti", "Ip6.OutTransmits", "Ip6.InNoECTPkts",
                "Icmp6.OutRateLimitHost"):
        assert key not in counters
        assert counters.get(key) is None


def test_extra_blank_lines_are_ignored():
    assert snmp6.parse(text("snmp6/snmp6_extra_blank_lines")) == snmp6.parse(text("snmp6/snmp6"))


def test_unknown_prefix_kept_whole():
    assert snmp6.parse("Sctp6InPkts 3\nIp6 4\n") == {"Sctp6InPkts": 3, "Ip6": 4}


@pytest.mark.parametrize("relpath, message", [
    ("snmp6/snmp6_truncated", "line 74"),
    ("snmp6/snmp6_non_numeric", "'0x1' is not a number"),
    ("snmp6/snmp6_three_fields", "line 2"),
    ("common/empty", "no counters"),
    ("common/blank_lines", "no counters"),
    ("common/garbage.bin", None),
    ("snmp/snmp", None),
])
def test_broken_inputs_raise_parse_error(relpath, message):
    with pytest.raises(ParseError, match=message):
        snmp6.parse(text(relpath))
