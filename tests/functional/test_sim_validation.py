"""The simulator against the real kernel: each validated lab scenario runs once (about 20 s
for the four), its drop rate is predicted from the calibrated settings (the per-packet
softirq cost included) and the load the programs achieved, and the error must stay within
the bound docs/sim.md states for it ("Validation against the lab"): 25 %, and up to +35 %
for listen-overflow, whose lab takes one of two paths at random."""

from __future__ import annotations

import subprocess

import pytest

from dropdoc.diagnose import diagnosis_from_window
from dropdoc.fix.plan import make_plan
from dropdoc.sim import validate

from .conftest import requires_root

pytestmark = [requires_root, pytest.mark.functional]

# (lowest, highest) accepted error = (predicted - measured) / measured, per scenario.
BOUNDS = {
    "udp-rcvbuf": (-0.25, 0.25),
    "qdisc-drop": (-0.25, 0.25),
    # 11 of 15 runs -16 .. -20 %; when a connection needs another SYN retry the client closes
    # later, fewer FINs are refused and the lab counts less: -11, -8, +23, +29 % (docs/sim.md)
    "listen-overflow": (-0.25, 0.35),
    "cpu-backlog": (-0.25, 0.25),
}


@pytest.fixture(scope="module")
def runs(no_leftovers_module):
    return {name: validate.run_lab(name) for name in validate.SCENARIOS}


@pytest.fixture(scope="module")
def no_leftovers_module():
    """The module-scoped twin of conftest's no_leftovers: the four labs run once for all tests."""
    from .conftest import lab_namespaces

    before = set(lab_namespaces())
    yield
    left = set(lab_namespaces()) - before
    for name in left:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    assert not left, f"namespaces left behind: {sorted(left)}"


@pytest.fixture(scope="module")
def rows(runs):
    return {name: validate.predict(run) for name, run in runs.items()}


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_prediction_within_the_stated_bound(rows, name):
    row = rows[name]
    assert row.finding == validate.FINDINGS[name]
    assert row.measured_per_s and row.measured_per_s > 0, f"{name}: the lab produced no drops"
    low, high = BOUNDS[name]
    assert low <= row.error <= high, (f"{name}: measured {row.measured_per_s:.1f}/s, predicted "
                                      f"{row.predicted_per_s:.1f}/s, error {100 * row.error:+.0f} % "
                                      f"outside [{100 * low:+.0f} %, {100 * high:+.0f} %]; params {row.params}")


def test_cpu_backlog_cost_is_measured_and_the_cpu_overloaded(runs, rows):
    """The premise of the cpu-backlog row (docs/sim.md): its per-packet cost comes from
    counters through the users' calibration path, not from the 1 us default, and with it the
    RPS CPU is offered several times what it drains - the drops are set by throughput."""
    row = rows["cpu-backlog"]
    assert row.sources["rx_cost_us"].startswith("calibrate: /proc/stat softirq"), row.sources
    # 1000 firewall rules: tens of microseconds a datagram (31-54 us here), not the 1 us default
    assert 5.0 < row.params["rx_cost_us"] < 500.0, row.params
    assert row.checks["offered_load"] > 2.0, row.checks
    # the CPU drained what it could: never more than the model's saturated CPU (the model has
    # no contention from other tasks; docs/sim.md gives the spread of this check)
    assert row.checks["drained_measured"] > 0 and row.checks["drained_error"] > -0.25, row.checks


def test_cpu_backlog_what_if_the_fix_is_applied(runs):
    """What `dropdoc fix` relies on: the backlog the fix proposes from these drops
    (dropdoc.rules.enrichers.kernel.backlog_proposal, verified to 0 drops by test_lab_fixes)
    takes this burst in the model too, and the value in force (1) does not."""
    from dropdoc.rules.enrichers.kernel import backlog_proposal
    from dropdoc.sim import simulate

    run = runs["cpu-backlog"]
    params, _, _ = validate.params_for(run)
    assert params.netdev_max_backlog == 1
    assert simulate(params, seconds=run.seconds).drops["cpu.backlog_drop"] > 0
    worst = max(v or 0 for n, v in run.deltas.items() if n.startswith("softnet.cpu") and n.endswith(".dropped"))
    proposed = backlog_proposal(1, worst)
    fixed = simulate(params.replace(netdev_max_backlog=proposed), seconds=run.seconds)
    assert fixed.drops["cpu.backlog_drop"] < 0.5, (proposed, fixed.stages["cpu.backlog_drop"].peak)


def test_settings_come_from_the_calibration_path_and_load_from_the_programs(rows):
    udp, qdisc, listen = rows["udp-rcvbuf"], rows["qdisc-drop"], rows["listen-overflow"]
    # what the lab set up, read back through dropdoc.sim.calibrate from the window
    assert udp.params["udp_rcvbuf"] == 4096 and udp.sources["udp_rcvbuf"].startswith("calibrate:")
    assert qdisc.params["link_rate_bps"] == 100e6 and qdisc.params["qdisc_limit_bytes"] == 20480
    assert qdisc.sources["shaper_burst_bytes"].startswith("calibrate:")
    assert listen.params["somaxconn"] == 16 and listen.sources["somaxconn"].startswith("calibrate:")
    backlog = rows["cpu-backlog"]
    assert backlog.params["netdev_max_backlog"] == 1 and backlog.sources["netdev_max_backlog"].startswith("calibrate:")
    # the load the programs really sent, not the window's averages
    assert udp.params["udp_total"] >= 2900 and udp.sources["udp_rate"].startswith("sender summary")
    assert qdisc.params["tx_total"] == 2000
    assert backlog.params["udp_total"] == 40000 and backlog.sources["udp_rate"].startswith("2 senders")


def test_markdown_table_has_every_row(rows):
    table = validate.markdown(list(rows.values()))
    runs, drained = table.split("\n\n")       # one run each: no spread table
    assert runs.count("\n") == 1 + len(rows)
    for name in validate.SCENARIOS:
        assert f"| {name} |" in runs
    assert drained.count("\n") == 2 and "| cpu-backlog |" in drained


def test_fix_plan_from_the_same_window_is_justified_by_the_model(runs):
    """`dropdoc fix` on the reference case's window: the simulator replays the measured burst
    (so it must give back the measured rate) and the proposed somaxconn absorbs it."""
    run = runs["listen-overflow"]
    diagnosis = diagnosis_from_window(run.window).to_dict()
    plan = make_plan(diagnosis, live=False)
    change = next(c for c in plan.changes if c.target == "net.core.somaxconn")
    simulation = change.simulation
    assert simulation is not None, plan.notes
    assert simulation["predicted_before_per_s"] == pytest.approx(run.measured_per_s, rel=0.1)
    assert simulation["predicted_after_per_s"] == 0.0
    assert change.proposed >= simulation["needed"] > 16
    assert simulation["text"].startswith(f"somaxconn {change.proposed} absorbs a ")
