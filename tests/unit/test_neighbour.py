"""neighbour.parse on /proc/net/stat/arp_cache and ndisc_cache: the 6.18 capture, the 2.6.32
layout without table_fulls, the 3.x/4.x double-spaced layout, broken files; read() with the
host fallback through /proc/1/net for named namespaces."""

from pathlib import Path

import pytest

from dropdoc.errors import ParseError, SourceUnavailable
from dropdoc.snapshot import Snapshot
from dropdoc.sources import SOURCES, neighbour
from dropdoc.sources.base import ReadContext, read_source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "neighbour"


def text(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8", errors="replace")


def test_real_6_18_arp_cache():
    table = neighbour.parse(text("arp_cache"), "arp")
    assert table.table == "arp" and table.cpus == 2
    assert table.entries == 4  # a gauge: the table's size now, not summed over CPUs
    assert tuple(["entries", *table.counters]) == neighbour.KNOWN_COLUMNS
    # summed over both CPU rows
    assert table.get("unresolved_discards") == 0x618 + 0x1E6
    assert table.get("allocs") == 0x52 + 0x67
    assert table.get("res_failed") == 2
    assert table.get("table_fulls") == 0
    assert table.host_wide is True


def test_real_6_18_ndisc_cache():
    table = neighbour.parse(text("ndisc_cache"), "ndisc")
    assert table.cpus == 2 and table.get("table_fulls") == 0
    assert set(table.counters) == set(neighbour.KNOWN_COLUMNS[1:])


def test_2_6_32_has_no_table_fulls_column():
    table = neighbour.parse(text("arp_cache_2.6.32"), "arp")
    assert table.cpus == 4 and table.entries == 3
    assert table.get("table_fulls") is None  # absent, never 0
    assert "table_fulls" not in table.counters
    assert table.get("unresolved_discards") == 0x10 + 0x5
    assert table.get("lookups") == 0x186E5 + 0x2 + 0x3 + 0x9


def test_4_x_double_spaced_header_with_table_fulls():
    table = neighbour.parse(text("arp_cache_4.x_table_full"), "arp")
    assert table.get("table_fulls") == 0x39C + 0x240
    assert table.get("forced_gc_runs") == 0x3A1 + 0x252
    assert table.get("unresolved_discards") == 0x23 + 0x46


def test_columns_are_found_by_name_not_position():
    lines = text("arp_cache").splitlines()
    header, rows = lines[0].split(), [line.split() for line in lines[1:]]
    order = [0, *reversed(range(1, len(header)))]  # entries first, the rest reversed
    shuffled = "\n".join(" ".join(cols[i] for i in order) for cols in [header, *rows])
    assert neighbour.parse(shuffled).counters == neighbour.parse(text("arp_cache")).counters


def test_unknown_future_column_is_kept():
    lines = text("arp_cache").splitlines()
    extended = "\n".join([lines[0] + " future_drops"] + [line + " 00000007" for line in lines[1:]])
    assert neighbour.parse(extended).get("future_drops") == 14


@pytest.mark.parametrize("name, message", [
    ("broken_header_only", "without any CPU row"),
    ("broken_short_row", "values for 13 columns"),
    ("broken_not_hex", "not a number"),
    ("broken_no_header", "does not start with 'entries'"),
    ("broken_duplicate_column", "duplicate column"),
    ("broken_empty", "empty"),
])
def test_broken_files_raise_parse_error(name, message):
    with pytest.raises(ParseError, match=message):
        neighbour.parse(text(name))


def test_counters_are_prefixed_per_table_without_the_gauge():
    stats = neighbour.NeighbourStats({"arp": neighbour.parse(text("arp_cache"), "arp"),
                                      "ndisc": neighbour.parse(text("ndisc_cache"), "ndisc")})
    flat = neighbour.counters(stats)
    assert flat["neigh.arp.unresolved_discards"] == 0x618 + 0x1E6
    assert "neigh.arp.entries" not in flat
    assert len(flat) == 2 * 12


def _tree(tmp_path: Path, where: str, files=("arp_cache", "ndisc_cache")) -> Path:
    directory = tmp_path.joinpath("proc", *where.split("/"), "stat")
    directory.mkdir(parents=True)
    for name in files:
        (directory / name).write_bytes((FIXTURES / name).read_bytes())
    return tmp_path


def test_read_from_this_namespace(tmp_path):
    stats = neighbour.read(ReadContext(root=str(_tree(tmp_path, "net")), live=False))
    assert set(stats.tables) == {"arp", "ndisc"}
    assert stats.tables["arp"].path == "proc/net/stat/arp_cache"
    assert stats.host_wide and "whole host" in stats.note


def test_read_falls_back_to_the_host_view_inside_a_netns(tmp_path):
    # inside a named netns /proc/net/stat has no arp_cache: pid 1's view is the host's
    stats = neighbour.read(ReadContext(root=str(_tree(tmp_path, "1/net")), netns="srv", live=False))
    assert stats.tables["arp"].path == "proc/1/net/stat/arp_cache"
    assert stats.tables["arp"].host_wide


def test_read_without_ipv6_keeps_arp(tmp_path):
    stats = neighbour.read(ReadContext(root=str(_tree(tmp_path, "net", files=("arp_cache",))), live=False))
    assert set(stats.tables) == {"arp"}
    assert "neigh.ndisc.unresolved_discards" not in neighbour.counters(stats)


def test_read_nothing_is_unavailable(tmp_path):
    result = read_source(SOURCES["neighbour"], ReadContext(root=str(tmp_path), live=False))
    assert result.status == "unavailable"
    assert "arp_cache" in result.error
    with pytest.raises(SourceUnavailable):
        neighbour.read(ReadContext(root=str(tmp_path), live=False))


def test_read_broken_file_is_failed_not_an_exception(tmp_path):
    directory = tmp_path / "proc" / "net" / "stat"
    directory.mkdir(parents=True)
    (directory / "arp_cache").write_bytes((FIXTURES / "broken_short_row").read_bytes())
    result = read_source(SOURCES["neighbour"], ReadContext(root=str(tmp_path), live=False))
    assert result.status == "failed" and "13 columns" in result.error


def test_snapshot_json_marks_host_wide(tmp_path):
    ctx = ReadContext(root=str(_tree(tmp_path, "net")), live=False)
    snap = Snapshot(0.0, 0.0, "srv", "6.18", results={"neighbour": read_source(SOURCES["neighbour"], ctx)})
    data = snap.to_dict()["sources"]["neighbour"]
    assert data["host_wide"] is True and data["tables"]["arp"]["host_wide"] is True
    assert snap.counters()["neigh.arp.res_failed"] == 2


def test_gc_thresholds_are_wanted_as_global_sysctls():
    from dropdoc.sources import sysctls

    assert "net.ipv4.neigh.default.gc_thresh3" in sysctls.KEYS
    assert "net.ipv4.neigh.default.gc_thresh3" in sysctls.GLOBAL_KEYS
    assert "net.ipv4.neigh.default.unres_qlen_bytes" not in sysctls.GLOBAL_KEYS
