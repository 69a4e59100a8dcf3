"""netdev.parse on /proc/net/dev: columns named by the second header line."""

from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import netdev

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

COLUMNS = ["rx_bytes", "rx_packets", "rx_errs", "rx_drop", "rx_fifo", "rx_frame", "rx_compressed",
           "rx_multicast", "tx_bytes", "tx_packets", "tx_errs", "tx_drop", "tx_fifo", "tx_colls",
           "tx_carrier", "tx_compressed"]


def text(relpath: str) -> str:
    return (FIXTURES / relpath).read_bytes().decode("utf-8", errors="replace")


def test_real_interfaces_and_columns():
    interfaces = netdev.parse(text("netdev/dev"))
    assert list(interfaces) == ["lo", "ifb0", "ifb1", "eth0"]
    assert all(list(table) == COLUMNS for table in interfaces.values())
    assert interfaces["eth0"]["rx_bytes"] == 17294484
    assert interfaces["eth0"]["rx_packets"] == 514
    assert interfaces["eth0"]["tx_bytes"] == 45706
    assert interfaces["eth0"]["tx_packets"] == 375
    assert interfaces["eth0"]["rx_drop"] == 0
    assert interfaces["lo"]["rx_packets"] == interfaces["lo"]["tx_packets"] == 29


def test_long_names_glued_to_the_first_value():
    # The kernel prints "%6s:%8llu": names longer than 6 characters touch the number.
    interfaces = netdev.parse(text("netdev/dev_busy_host"))
    assert list(interfaces) == ["lo", "enp3s0f0", "bond0.100", "br-0a1b2c3d", "veth9f3c2e1"]
    assert interfaces["enp3s0f0"]["rx_bytes"] == 98123344627632
    assert interfaces["enp3s0f0"]["rx_packets"] == 7123456789  # > 2**32
    assert interfaces["enp3s0f0"]["rx_drop"] == 231447
    assert interfaces["enp3s0f0"]["rx_fifo"] == 12
    assert interfaces["bond0.100"]["rx_drop"] == 17
    assert interfaces["br-0a1b2c3d"]["tx_drop"] == 3


def test_counters_keys():
    flat = netdev.counters(netdev.parse(text("netdev/dev_busy_host")))
    assert flat["dev.enp3s0f0.rx_drop"] == 231447
    assert flat.get("dev.enp3s0f0.rx_missed_errors") is None  # folded into drop here


def test_header_only_is_no_interface():
    assert netdev.parse("".join(text("netdev/dev").splitlines(True)[:2])) == {}


@pytest.mark.parametrize("relpath, message", [
    ("netdev/dev_truncated", "malformed line 'eth0:"),
    ("netdev/dev_no_header", "header"),
    ("netdev/dev_non_numeric", "'2x' is not a number"),
    ("netdev/dev_missing_column", "malformed line 'ifb0:"),
    ("common/empty", "header"),
    ("common/blank_lines", "header"),
    ("common/garbage.bin", None),
    ("snmp/snmp", None),
])
def test_broken_inputs_raise_parse_error(relpath, message):
    with pytest.raises(ParseError, match=message):
        netdev.parse(text(relpath))


def test_line_without_colon():
    lines = text("netdev/dev").splitlines()
    with pytest.raises(ParseError, match="malformed"):
        netdev.parse("\n".join(lines[:2] + [lines[2].replace(":", " ", 1)]))
