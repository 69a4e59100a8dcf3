"""dropdoc.sim.validate without a lab: the cpu-backlog row from a hand-built lab run - the
load from the senders' summaries, the per-packet cost from /proc/stat and softnet, and the
drained-packets check printed beside the drop rate."""

from __future__ import annotations

import os

import pytest

from dropdoc.sim import simulate, validate
from dropdoc.sim.validate import LabRun

SENDERS = {"programs": [{"sent": 20000, "seconds": 0.12, "started_at": 100.0},
                        {"sent": 20000, "seconds": 0.10, "started_at": 100.02}]}


# the lab steers RPS to the last CPU of the machine the test runs on
RPS = max((os.cpu_count() or 1) - 1, 0)
OTHER = RPS + 1 if RPS == 0 else 0


def backlog_run(softirq: float = 0.12, processed: int = 3000, dropped: int = 37000) -> LabRun:
    deltas = {f"softnet.cpu{OTHER}.processed": 40, f"softnet.cpu{OTHER}.dropped": 0,
              f"softnet.cpu{RPS}.processed": processed, f"softnet.cpu{RPS}.dropped": dropped}
    settings = {"net.core.netdev_max_backlog": 1, "net.core.netdev_budget": 300}
    return LabRun("cpu-backlog", "cpu.backlog_drop", 3.0, dropped, deltas, settings, SENDERS,
                  cpu={f"cpu{OTHER}": {"softirq": 0.01, "steal": 0.0}, f"cpu{RPS}": {"softirq": softirq, "steal": 0.0}})


def test_backlog_row_takes_the_load_from_the_senders_and_the_cost_from_counters():
    params, shown, sources = validate.params_for(backlog_run())
    assert params.udp_rate == pytest.approx(40000 / 0.12) and params.udp_total == 40000
    assert params.rx_cost_us == pytest.approx(40.0) and "/proc/stat softirq" in sources["rx_cost_us"]
    assert params.netdev_max_backlog == 1 and params.rps_cpus == 1 and params.poisson is False
    assert {"udp_rate", "rx_cost_us", "netdev_max_backlog"} <= set(shown)


def test_overloaded_cpu_drops_what_it_cannot_drain_and_the_check_says_how_much_it_drained():
    row = validate.predict(backlog_run())
    # 40,000 in 0.12 s at 40 us a packet: the CPU drains 0.12 s / 40 us = 3,000, the rest is lost
    assert row.predicted_per_s * 3.0 == pytest.approx(37000, rel=0.02)
    assert row.error == pytest.approx(0.0, abs=0.02)
    checks = row.checks
    assert checks["cpu"] == f"cpu{RPS}" and checks["drained_measured"] == 3000
    assert checks["drained_predicted"] == pytest.approx(3000, rel=0.05)
    assert checks["offered_load"] == pytest.approx(40000 / 0.12 * 40e-6, rel=0.01)
    assert checks["sensitivity"] == pytest.approx(3000 / 37000, rel=0.01)


def test_a_cpu_busy_with_other_work_drained_less_than_the_model_says():
    # same load and cost, but the softirq only had half of the CPU: it drained 1,500
    row = validate.predict(backlog_run(softirq=0.06, processed=1500, dropped=38500))
    assert row.checks["drained_error"] == pytest.approx(1.0, rel=0.1)     # model: 3,000
    assert -0.1 < row.error < 0                                          # drops: barely


def test_markdown_adds_the_drained_table_for_backlog_rows_only():
    rows = [validate.predict(backlog_run())]
    table = validate.markdown(rows)
    assert "| cpu-backlog | 3,000 | " in table.split("\n\n")[1]
    plain = validate.Row("udp-rcvbuf", "udp.rcvbuf_full", 800.0, 790.0, 3.5, {}, {})
    assert "\n\n" not in validate.markdown([plain])


def test_fix_what_if_stops_the_drops_in_the_model():
    params, _, _ = validate.params_for(backlog_run())
    assert simulate(params.replace(netdev_max_backlog=65536), seconds=3.0).drops["cpu.backlog_drop"] < 0.5
