"""dropdoc.sim.cputime: /proc/stat per CPU, and the per-packet softirq cost (rx_cost_us) it
gives with softnet_stat - parsing, deltas, which CPU, and when there is too little to say."""

from __future__ import annotations

import pytest

from dropdoc.sim import cputime

# /proc/stat of this VM (kernel 6.18, 2 vCPUs), trimmed after the cpu lines.
PROC_STAT = """cpu  85130 95 30510 2342177 1510 0 3107 42 0 0
cpu0 43010 50 15020 1170001 700 0 1004 20 0 0
cpu1 42120 45 15490 1172176 810 0 2103 22 0 0
intr 18446744 0 9 0
ctxt 28838383
"""


def test_parse_keeps_per_cpu_lines_in_seconds():
    times = cputime.parse(PROC_STAT, hz=100)
    assert set(times) == {"cpu0", "cpu1"}                      # not the all-CPU "cpu" line
    assert times["cpu1"]["softirq"] == pytest.approx(21.03) and times["cpu0"]["steal"] == pytest.approx(0.2)
    assert set(times["cpu0"]) == set(cputime.FIELDS)


def test_parse_skips_damaged_lines_and_old_kernels_with_fewer_columns():
    times = cputime.parse("cpu0 1 2 3 4\ncpu1 x y z\ncpuZ 1 2 3\n", hz=100)
    assert times == {"cpu0": {"user": 0.01, "nice": 0.02, "system": 0.03, "idle": 0.04}}


def test_delta_leaves_out_what_went_backwards_and_vanished_cpus():
    before = {"cpu0": {"softirq": 1.0, "idle": 5.0}, "cpu1": {"softirq": 2.0}}
    after = {"cpu0": {"softirq": 1.25, "idle": 4.0}}
    assert cputime.delta(before, after) == {"cpu0": {"softirq": 0.25}}
    assert cputime.delta(None, after) == {} and cputime.delta(before, None) == {}


def times(**softirq: float) -> cputime.CpuTimes:
    return {cpu: {"softirq": s, "steal": 0.0} for cpu, s in softirq.items()}


def test_cost_is_softirq_time_over_packets_of_the_cpu_that_dropped():
    # CPU 0 processed more, but CPU 1 is the one whose backlog overflowed
    cost = cputime.softirq_cost(times(cpu0=0.05, cpu1=0.12), {0: 50_000, 1: 3_000}, {0: 0, 1: 37_000})
    assert cost.cpu == 1 and cost.cost_us == pytest.approx(40.0)
    assert "softirq 0.12 s" in cost.describe() and "processed 3000 on CPU 1" in cost.describe()


def test_without_drops_the_busiest_cpu():
    cost = cputime.softirq_cost(times(cpu0=0.05, cpu1=0.12), {0: 50_000, 1: 3_000})
    assert cost.cpu == 0 and cost.cost_us == pytest.approx(1.0)


@pytest.mark.parametrize("softirq,processed", [(0.02, 50_000),   # under 3 USER_HZ units: noise
                                               (0.5, 900),        # too few packets for the ticks
                                               (0.5, None), (0.5, 0)])
def test_too_little_to_measure_is_none(softirq, processed):
    assert cputime.softirq_cost(times(cpu1=softirq), {1: processed}, cpu=1) is None
    assert cputime.softirq_cost(times(cpu1=softirq), {}, {}) is None


def test_share_is_what_steal_leaves():
    cost = cputime.SoftirqCost(cpu=1, cost_us=40.0, softirq_s=0.12, processed=3000, steal_s=0.3)
    assert cputime.softirq_share(cost, 3.0) == pytest.approx(0.9)
    assert cputime.softirq_share(cost, 0.0) is None
    assert cputime.softirq_share(cputime.SoftirqCost(1, 40.0, 0.12, 3000, 0.0), 3.0) is None


def test_read_of_a_missing_file_is_none(tmp_path):
    assert cputime.read(str(tmp_path / "nope")) is None
    live = cputime.read()
    assert live and all(name.startswith("cpu") for name in live)
