"""softnet.parse on /proc/net/softnet_stat: 15-column 6.18 capture and 10/11/13-column older layouts."""

from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.sources import softnet

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def text(relpath: str) -> str:
    return (FIXTURES / relpath).read_bytes().decode("utf-8", errors="replace")


def test_real_6_18_fifteen_columns():
    cpus = softnet.parse(text("softnet/softnet_stat"))
    assert [len(line.split()) for line in text("softnet/softnet_stat").splitlines()] == [15, 15]
    assert [(c.cpu, c.cpu_known) for c in cpus] == [(0, True), (1, True)]
    assert cpus[0].processed == 0x14ED
    assert cpus[1].processed == 0x12EE
    assert all(c.dropped == 0 and c.time_squeeze == 0 for c in cpus)
    assert all(c.received_rps == 0 and c.flow_limit_count == 0 and c.backlog_len == 0 for c in cpus)


def test_3_10_ten_columns():
    cpus = softnet.parse(text("softnet/softnet_stat_3.10"))
    assert len(cpus) == 4
    assert [(c.cpu, c.cpu_known) for c in cpus] == [(0, False), (1, False), (2, False), (3, False)]
    assert cpus[0].processed == 0x2A8F31C4
    assert cpus[1].dropped == 1000
    assert cpus[1].time_squeeze == 0x2C0
    assert cpus[1].received_rps == 0x12
    assert all(c.flow_limit_count is None and c.backlog_len is None for c in cpus)


def test_4_x_eleven_columns():
    cpus = softnet.parse(text("softnet/softnet_stat_4.x"))
    assert [c.cpu_known for c in cpus] == [False] * 4
    assert cpus[0].dropped == 0x1D4C
    assert cpus[0].flow_limit_count == 0x10
    assert cpus[0].received_rps == 0x3A2
    assert all(c.backlog_len is None for c in cpus)


def test_5_10_cpu_index_with_an_offline_cpu():
    cpus = softnet.parse(text("softnet/softnet_stat_5.10_cpu2_offline"))
    # Line 2 is CPU 3: the cpu_index column is used, not the line number.
    assert [(c.cpu, c.cpu_known) for c in cpus] == [(0, True), (1, True), (3, True)]
    assert cpus[0].dropped == 4000
    assert cpus[0].backlog_len == 1000
    assert cpus[2].dropped == 10
    assert cpus[2].backlog_len == 2


def test_counters_per_cpu_only():
    flat = softnet.counters(softnet.parse(text("softnet/softnet_stat_5.10_cpu2_offline")))
    assert "softnet.dropped" not in flat  # a host-wide sum of u32s is neither u32 nor monotonic
    assert flat["softnet.cpu0.dropped"] == 4000
    assert flat["softnet.cpu3.dropped"] == 10
    assert "softnet.cpu2.dropped" not in flat


def test_blank_lines_do_not_shift_cpu_numbers():
    lines = text("softnet/softnet_stat_4.x").splitlines()
    cpus = softnet.parse("\n" + lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n\n")
    assert [c.cpu for c in cpus] == [0, 1, 2, 3]


@pytest.mark.parametrize("relpath, message", [
    ("softnet/softnet_stat_truncated", "line 2: 5 columns"),
    ("softnet/softnet_stat_9_columns", "9 columns, expected at least 10"),
    ("softnet/softnet_stat_non_hex", "'0000zz00' is not a number"),
    ("common/empty", "empty"),
    ("common/blank_lines", "empty"),
    ("common/garbage.bin", None),
    ("snmp/snmp", None),
])
def test_broken_inputs_raise_parse_error(relpath, message):
    with pytest.raises(ParseError, match=message):
        softnet.parse(text(relpath))
