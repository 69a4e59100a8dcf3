"""dropdoc fix with the simulator for cpu.backlog_drop: the worst CPU's burst (drops and
packets processed while its backlog was full) -> the netdev_max_backlog that absorbs it, or
sustained overload -> spread the load. Offline plans (live=False), the real model."""

from __future__ import annotations

import json

import pytest

from dropdoc.fix import sim_support
from dropdoc.fix.plan import PLANNED, make_plan
from dropdoc.fix.render import plan_lines
from dropdoc.fix.sim_support import Burst
from dropdoc.fix.sim_support_backlog import backlog_load, backlog_verdict
from dropdoc.model import SCHEMA

pytest.importorskip("dropdoc.sim.sizing")

KEY = "net.core.netdev_max_backlog"


def backlog_finding(drops=33518, processed=6489, burst=(0.212, 33518, 6483), samples=31, drop_samples=2,
                    current=1, proposed=65536) -> dict:
    """A cpu.backlog_drop finding as the softnet enricher writes it; the default is what
    `dropdoc lab run cpu-backlog` measured (netdev_max_backlog 1, RPS to CPU 1)."""
    subject = {"cpu": 1, "drops": drops, "processed": processed}
    if burst is not None:
        seconds, burst_drops, burst_processed = burst
        subject |= {"samples": samples, "drop_samples": drop_samples, "sampled_seconds": 3.0, "bursts": 1,
                    "burst_seconds": seconds, "burst_drops": burst_drops, "burst_processed": burst_processed}
    return {"id": "cpu.backlog_drop", "layer": "kernel", "severity": "critical", "drops": drops,
            "rate_per_s": drops / 3.0, "benign": False, "summary": "",
            "evidence": [{"source": "counters", "counter": "softnet.cpu1.dropped", "delta": drops}],
            "subjects": [{"cpu": 0, "drops": 0, "processed": 100}, subject],
            "fixes": [{"kind": "sysctl", "key": KEY, "current": current, "proposed": proposed, "netns": None,
                       "note": ""}]}


def diagnosis(finding: dict, seconds: float = 3.0) -> dict:
    return {"schema": SCHEMA, "host": {"kernel": "6.18.0", "netns": None}, "window": {"seconds": seconds},
            "healthy": False, "findings": [finding]}


def test_load_from_the_worst_cpu():
    load = backlog_load(backlog_finding(), 1, 3.0)
    assert load.cpu == 1 and load.burst == Burst(0.212, 33518, 6483, True, 2 / 31)
    assert load.drain_per_s == pytest.approx(6483 / 0.212)
    assert load.arrival_per_s == pytest.approx((6483 + 2 + 33518) / 0.212)


@pytest.mark.parametrize("change", [{"subjects": []}, {"subjects": [{"cpu": 1, "drops": 5}]},  # no processed
                                    {"id": "cpu.time_squeeze"}])
def test_load_is_none_without_the_numbers_it_needs(change):
    assert backlog_load({**backlog_finding(), **change}, 1, 3.0) is None
    assert backlog_load(backlog_finding(), None, 3.0) is None


def test_unsampled_window_is_one_burst():
    load = backlog_load(backlog_finding(burst=None), 1, 3.0)
    assert load.burst == Burst(3.0, 33518, 6489, False, None)


def test_sentences():
    load = backlog_load(backlog_finding(), 1, 3.0)
    ok = backlog_verdict(load, 65536, 33518, 11168.2, 0.0)
    assert ok.text.startswith("netdev_max_backlog 65,536 absorbs a 212 ms burst of 188,693 packets/s into CPU 1's "
                              "backlog, which drained 30,580/s: the simulator's smallest backlog without drops is "
                              "33,518 (96 % headroom")
    small = backlog_verdict(load, 2048, 33518, 11168.2, 10500.0)
    assert "2,048 is too small" in small.text and small.text.endswith("needs at least 33,518")
    none_helps = backlog_verdict(load, 65536, None, 11168.2, 11000.0)
    assert none_helps.sustained and "beyond what 65,536 packets hold" in none_helps.text
    assert "spread the load over more CPUs" in none_helps.text


def test_model_reproduces_the_measured_rate():
    found = sim_support.justify(backlog_finding(), KEY, 1, 65536, 3.0)
    assert found.before_per_s == pytest.approx(33518 / 3.0, rel=0.05)
    assert found.after_per_s == 0.0 and not found.sustained
    assert 0.95 * 33520 <= found.needed <= 1.05 * 33520       # backlog + 1 + drops


def test_model_sustained_when_dropping_all_window():
    finding = backlog_finding(drops=300000, processed=600000, burst=(2.9, 300000, 580000), drop_samples=29,
                              samples=30, proposed=2048, current=1000)
    found = sim_support.justify(finding, KEY, 1000, 2048, 3.0)
    assert found.sustained and found.inputs["horizon_seconds"] == 60.0
    assert found.text.startswith("sustained overload: a bigger backlog only delays drops")
    assert found.after_per_s > 0.9 * found.before_per_s > 0


def test_plan_raises_a_too_small_proposal_and_shows_it():
    plan = make_plan(diagnosis(backlog_finding(proposed=4096)), live=False)
    change = plan.changes[0]
    assert change.status == PLANNED and change.proposed == change.change.value == 65536
    assert change.simulation["raised_from"] == 4096 and "raised to 65536" in change.why
    record = json.loads(json.dumps(plan.to_dict()))["changes"][0]["simulation"]
    assert record["target"] == KEY and record["predicted_after_per_s"] == 0.0
    assert set(record["inputs"]) >= {"arrival_per_s", "drain_per_s", "burst_seconds", "cpu"}
    text = "\n".join(plan_lines(plan))
    assert "simulator: netdev_max_backlog 65,536 absorbs a 212 ms burst" in text
    assert "predicted by the simulator (same burst): 11" in text


def test_plan_never_lowers_and_never_passes_the_ceiling():
    finding = backlog_finding(drops=200000, burst=(0.5, 200000, 6483))
    change = make_plan(diagnosis(finding), live=False).changes[0]
    assert change.proposed == 65536 and change.simulation["sustained"] is True
