"""sources/conntrack.py on /proc/net/stat/nf_conntrack: captured (this kernel, idle, active and
overflowing), crafted layouts of older kernels, and broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import SOURCES, conntrack, sysctls
from dropdoc.sources.base import ReadContext, read_source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "conntrack"
FULL = json.loads((FIXTURES / "full.json").read_text())


def load(name: str) -> conntrack.ConntrackStats:
    return conntrack.parse((FIXTURES / name).read_text())


def test_current_layout_by_header_name():
    stats = load("nf_conntrack")
    assert stats.columns[:3] == ("entries", "clashres", "found")
    assert len(stats.cpus) == 2
    assert stats.entries == 22  # 0x16
    cpu = stats.cpus[0].counters
    # renamed columns get the kernel's field names
    assert "clash_resolve" in cpu and "chaintoolong" in cpu and "error" in cpu
    assert "clashres" not in cpu and "chainlength" not in cpu and "icmp_error" not in cpu
    # printed as constant 0 since the kernel stopped counting them: None, never 0
    assert cpu["new"] is None and cpu["ignore"] is None and cpu["delete"] is None


def test_captured_overflow_before_and_after():
    before, after = load("full_before"), load("full_after")
    assert before.entries == FULL["sysctls_before"]["nf_conntrack_count"] == 0
    assert after.entries == FULL["sysctls_after"]["nf_conntrack_count"] == FULL["sysctls_after"]["nf_conntrack_max"]
    assert after.total("drop") == 1206  # 0x4b6 on CPU 1
    assert after.total("early_drop") == 0x16
    assert after.total("insert_failed") == 0
    # every datagram was a new flow: tracked, evicted-and-replaced or dropped (a few source
    # ports were reused by the sender and hit an existing entry)
    sent = FULL["load"]["sent"]
    accounted = after.entries + after.total("drop") + after.total("early_drop")
    assert sent - 20 <= accounted <= sent


def test_counters_are_per_cpu_and_skip_retired_columns():
    flat = conntrack.counters(load("full_after"))
    assert flat["conntrack.cpu1.drop"] == 0x4B6
    assert flat["conntrack.cpu0.drop"] == 0
    assert "conntrack.cpu0.new" not in flat  # retired: absent, never 0
    assert not any(name.endswith(".entries") for name in flat)  # a gauge, not a counter
    assert SOURCES["conntrack"].counter_bits == 32


def test_2_6_32_layout_has_no_search_restart_and_real_old_columns():
    stats = load("nf_conntrack_2.6.32")
    assert len(stats.cpus) == 4
    cpu = stats.cpus[0].counters
    assert "search_restart" not in cpu and "clash_resolve" not in cpu
    assert cpu["searched"] == 9000000 and cpu["new"] == 120000 and cpu["delete_list"] == 110000
    assert stats.total("drop") == 4100 + 3900 + 4000 + 4200
    assert stats.entries == 65536


def test_4_19_layout():
    stats = load("nf_conntrack_4.19")
    assert stats.total("insert_failed") == 1722 + 1650
    assert stats.cpus[1].counters["search_restart"] == 295
    assert "clash_resolve" not in stats.cpus[0].counters


def test_5_10_transitional_layout_retires_delete_list():
    stats = load("nf_conntrack_5.10")
    cpu = stats.cpus[0].counters
    assert cpu["clash_resolve"] == 5210
    assert cpu["delete_list"] is None and "chaintoolong" not in cpu


def test_total_is_none_when_a_column_is_retired_or_missing():
    stats = load("nf_conntrack")
    assert stats.total("new") is None
    assert stats.total("no_such_counter") is None


@pytest.mark.parametrize("name, message", [
    ("broken_non_hex", "not a number"),
    ("broken_missing_value", "16 values for 17 columns"),
    ("broken_no_header", "does not start with 'entries'"),
    ("broken_header_only", "no CPU lines"),
    ("broken_duplicate_column", "appears twice"),
])
def test_broken_files_are_parse_errors(name, message):
    with pytest.raises(ParseError, match=message):
        load(name)


@pytest.mark.parametrize("text", ["", "\n\n", "entries\n-0000001\n", "entries drop\n00000001 100000000\n"])
def test_degenerate_input_is_a_parse_error(text):
    with pytest.raises(ParseError):
        conntrack.parse(text)


def test_not_loaded_is_unavailable_with_the_reason(tmp_path):
    (tmp_path / "proc" / "net").mkdir(parents=True)
    result = read_source(SOURCES["conntrack"], ReadContext(root=str(tmp_path), live=False))
    assert result.status == "unavailable"
    assert "connection tracking is not loaded" in result.error


def test_read_from_a_copied_tree(tmp_path):
    (tmp_path / "proc" / "net" / "stat").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "stat" / "nf_conntrack").write_bytes((FIXTURES / "full_after").read_bytes())
    result = read_source(SOURCES["conntrack"], ReadContext(root=str(tmp_path), live=False))
    assert result.ok and result.data.total("drop") == 1206


def test_limits_are_added_to_the_sysctls_source_global_ones_marked():
    for key in (conntrack.COUNT, conntrack.MAX, conntrack.BUCKETS, *conntrack.TIMEOUTS):
        assert key in sysctls.KEYS
    assert conntrack.MAX in sysctls.GLOBAL_KEYS and conntrack.BUCKETS in sysctls.GLOBAL_KEYS
    assert conntrack.COUNT not in sysctls.GLOBAL_KEYS  # the count is per namespace
