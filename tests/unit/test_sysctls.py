"""sysctls.parse_value (and read() over a copied /proc/sys tree captured from this machine)."""

from pathlib import Path

import pytest

from dropdoc.errors import ParseError, SourceUnavailable
from dropdoc.sources import sysctls
from dropdoc.sources.base import ReadContext

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TREE = FIXTURES / "sysctls"


def raw(key: str) -> str:
    return TREE.joinpath(*sysctls.key_path(key)).read_text()


def test_single_integer():
    assert raw("net.core.somaxconn") == "4096\n"
    assert sysctls.parse_value(raw("net.core.somaxconn")) == 4096
    assert sysctls.parse_value(raw("net.ipv4.tcp_max_syn_backlog")) == 2048
    assert sysctls.parse_value(raw("net.core.rps_sock_flow_entries")) == 0


def test_tab_separated_triples():
    assert raw("net.ipv4.tcp_rmem") == "4096\t131072\t33554432\n"
    assert sysctls.parse_value(raw("net.ipv4.tcp_rmem")) == (4096, 131072, 33554432)
    assert sysctls.parse_value(raw("net.ipv4.udp_mem")) == (575799, 767734, 1151598)


@pytest.mark.parametrize("text, expected", [
    ("-1\n", -1),
    ("0 0\n", (0, 0)),
    ("  7  \n", 7),
    ("18446744073709551615\n", 2**64 - 1),
    ("cubic reno\n", "cubic reno"),        # e.g. tcp_available_congestion_control
    ("bbr\n", "bbr"),
    ("1 two 3\n", "1 two 3"),             # not all numbers: kept as text
    ("0x10\n", "0x10"),
    ("\ufffd\ufffd\n", "\ufffd\ufffd"),
    ("9" * 5000, "9" * 5000),              # beyond int()'s digit limit: text, not an exception
])
def test_other_values(text, expected):
    assert sysctls.parse_value(text) == expected


@pytest.mark.parametrize("text", ["", "\n", "  \t \n"])
def test_empty_value(text):
    with pytest.raises(ParseError, match="empty sysctl value"):
        sysctls.parse_value(text)


def test_read_copied_tree():
    values = sysctls.read(ReadContext(root=str(TREE), live=False))
    assert set(values) == set(sysctls.KEYS)
    assert values["net.core.somaxconn"] == 4096
    assert values["net.core.netdev_max_backlog"] == 1000
    assert values["net.ipv4.tcp_syncookies"] == 1
    assert values["net.ipv4.tcp_mem"] == (287898, 383867, 575796)


def test_read_missing_key_is_none(tmp_path):
    target = tmp_path.joinpath(*sysctls.key_path("net.core.somaxconn"))
    target.parent.mkdir(parents=True)
    target.write_text("128\n")
    empty = tmp_path.joinpath(*sysctls.key_path("net.ipv4.tcp_syncookies"))
    empty.parent.mkdir(parents=True)
    empty.write_text("")
    values = sysctls.read(ReadContext(root=str(tmp_path), live=False))
    assert values["net.core.somaxconn"] == 128
    assert values["net.ipv4.tcp_syncookies"] is None  # unparsable: None
    assert values["net.ipv4.tcp_max_syn_backlog"] is None  # absent: None, never 0


def test_read_nothing_readable(tmp_path):
    with pytest.raises(SourceUnavailable):
        sysctls.read(ReadContext(root=str(tmp_path), live=False))
