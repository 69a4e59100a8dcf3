"""snmp.parse on /proc/net/snmp and /proc/net/netstat: real 6.18 captures, a 3.10-era layout, broken files."""

from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import snmp

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def text(relpath: str) -> str:
    # What errors.read_text does with a kernel file.
    return (FIXTURES / relpath).read_bytes().decode("utf-8", errors="replace")


# --- /proc/net/snmp, kernel 6.18 -------------------------------------------------------

def test_snmp_sections_and_values():
    tables = snmp.parse(text("snmp/snmp"))
    assert list(tables) == ["Ip", "Icmp", "IcmpMsg", "Tcp", "Udp", "UdpLite"]
    assert tables["Ip"]["InReceives"] == 539
    assert tables["Ip"]["OutTransmits"] == 392
    assert tables["Tcp"]["ActiveOpens"] == 14
    assert tables["Tcp"]["PassiveOpens"] == 2
    assert tables["Tcp"]["OutRsts"] == 10
    assert tables["Udp"]["InDatagrams"] == 25
    assert tables["Udp"]["OutDatagrams"] == 26
    assert tables["Udp"]["RcvbufErrors"] == 0
    assert tables["Udp"]["MemErrors"] == 0
    assert tables["IcmpMsg"] == {"InType3": 1}


def test_snmp_negative_value_kept():
    # Tcp MaxConn is printed as a signed -1 ("no limit").
    assert snmp.parse(text("snmp/snmp"))["Tcp"]["MaxConn"] == -1


def test_snmp_every_header_name_has_a_value():
    raw = text("snmp/snmp").splitlines()
    tables = snmp.parse(text("snmp/snmp"))
    for header in raw[0::2]:
        section, names = header.split(":")
        assert list(tables[section]) == names.split()


def test_snmp_flatten_names():
    flat = snmp.flatten(snmp.parse(text("snmp/snmp")))
    assert flat["Udp.InDatagrams"] == 25
    assert flat["Tcp.MaxConn"] == -1
    assert flat["UdpLite.InDatagrams"] == 0
    assert "Udp.NoSuchCounter" not in flat


# --- /proc/net/netstat, kernel 6.18 ----------------------------------------------------

def test_netstat_sections_and_values():
    tables = snmp.parse(text("snmp/netstat"))
    assert list(tables) == ["TcpExt", "IpExt", "MPTcpExt"]
    tcpext = tables["TcpExt"]
    assert len(tcpext) == 135
    assert tcpext["TW"] == 8
    assert tcpext["TCPRcvCoalesce"] == 337
    assert tcpext["TCPDelivered"] == 78
    assert tcpext["TCPFromZeroWindowAdv"] == 26
    assert tcpext["ListenOverflows"] == 0
    assert tcpext["ListenDrops"] == 0
    assert tcpext["TCPReqQFullDrop"] == 0
    assert tcpext["TCPRcvQDrop"] == 0
    assert tcpext["TCPZeroWindowDrop"] == 0
    assert tables["IpExt"]["InOctets"] == 17290269
    assert tables["IpExt"]["OutOctets"] == 42765
    assert tables["IpExt"]["InNoECTPkts"] == 539
    assert len(tables["MPTcpExt"]) == 76


# --- 3.10-era layouts: counters added later are absent, never 0 -----------------------

def test_netstat_3_10_lacks_newer_counters():
    tables = snmp.parse(text("snmp/netstat_3.10"))
    tcpext = tables["TcpExt"]
    assert tcpext["ListenOverflows"] == 1532
    assert tcpext["ListenDrops"] == 1532
    assert tcpext["SyncookiesSent"] == 5120
    assert tcpext["TCPReqQFullDoCookies"] == 5120
    assert tcpext["TCPReqQFullDrop"] == 0
    assert tcpext["TCPBacklogDrop"] == 7
    assert tcpext["TCPPrequeued"] == 0  # prequeue was removed in 4.14: present here only
    # Added after 3.10:
    for name in ("TCPRcvQDrop", "TCPZeroWindowDrop", "TCPWqueueTooBig", "TCPDelivered",
                 "TCPAckCompressed", "TCPKeepAlive", "BusyPollRxPackets"):
        assert name not in tcpext
    assert "MPTcpExt" not in tables
    assert "InNoECTPkts" not in tables["IpExt"]
    assert tables["IpExt"]["InOctets"] == 742113309812  # > 2**32: 64-bit counter


def test_netstat_3_10_missing_counters_are_none_for_callers():
    flat = snmp.flatten(snmp.parse(text("snmp/netstat_3.10")))
    assert flat.get("TcpExt.TCPRcvQDrop") is None
    assert flat.get("TcpExt.TCPZeroWindowDrop") is None
    assert flat.get("TcpExt.ListenOverflows") == 1532


def test_snmp_3_10_lacks_newer_counters():
    tables = snmp.parse(text("snmp/snmp_3.10"))
    assert tables["Udp"]["RcvbufErrors"] == 48211
    assert tables["Udp"]["InErrors"] == 48211
    assert tables["Udp"]["NoPorts"] == 2231
    assert tables["Tcp"]["PassiveOpens"] == 5920174
    assert tables["Tcp"]["MaxConn"] == -1
    assert "MemErrors" not in tables["Udp"]
    assert "IgnoredMulti" not in tables["Udp"]
    assert "OutTransmits" not in tables["Ip"]
    assert "OutRateLimitHost" not in tables["Icmp"]
    flat = snmp.flatten(tables)
    assert flat.get("Udp.MemErrors") is None
    assert flat["Udp.RcvbufErrors"] == 48211


# --- odd but valid ---------------------------------------------------------------------

def test_extra_blank_lines_are_ignored():
    assert snmp.parse(text("snmp/snmp_extra_blank_lines")) == snmp.parse(text("snmp/snmp"))


def test_crlf_line_endings():
    assert snmp.parse(text("snmp/snmp").replace("\n", "\r\n")) == snmp.parse(text("snmp/snmp"))


def test_minimal_table():
    assert snmp.parse("Udp: InDatagrams RcvbufErrors\nUdp: 7 3\n") == {"Udp": {"InDatagrams": 7, "RcvbufErrors": 3}}


def test_same_section_twice_merges():
    parsed = snmp.parse("Udp: A\nUdp: 1\nUdp: B\nUdp: 2\n")
    assert parsed == {"Udp": {"A": 1, "B": 2}}


# --- broken ----------------------------------------------------------------------------

@pytest.mark.parametrize("relpath, message", [
    ("snmp/snmp_truncated", "odd number of lines"),
    ("snmp/netstat_truncated", "135 names but 26 values"),
    ("snmp/snmp_header_only", "header without values"),
    ("snmp/snmp_mismatched_section", "mismatched section 'Tcp' / 'Udp'"),
    ("snmp/snmp_non_numeric", "'2OO' is not a number"),
    ("snmp/snmp_missing_value", "15 names but 14 values"),
    ("common/empty", "no counters"),
    ("common/blank_lines", "no counters"),
    ("common/garbage.bin", ""),
    ("snmp6/snmp6", ""),            # another file's format
    ("softnet/softnet_stat", ""),
])
def test_broken_inputs_raise_parse_error(relpath, message):
    with pytest.raises(ParseError, match=message or None):
        snmp.parse(text(relpath))


@pytest.mark.parametrize("bad", [
    ":\n:\n",                                  # empty section name
    "Tcp A\nTcp 1\n",                          # no colon at all
    "Tcp X: A\nTcp X: 1\n",                    # space in the section name
    "Tcp: A B\nTcp: 1\n",
    "Tcp: A\nTcp: 1 2\n",
    "Tcp: A\nTcp: 0x10\n",
    "Tcp: A\nTcp: 1.5\n",
    "Tcp: A\nTcp: -\n",
])
def test_malformed_pairs(bad):
    with pytest.raises(ParseError):
        snmp.parse(bad)
