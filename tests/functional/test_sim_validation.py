"""The simulator against the real kernel: each validated lab scenario runs once (about 20 s
for the four), its drop rate is predicted from the calibrated settings and the load the
programs achieved, and the error must stay within the bound docs/sim.md states for it
("Validation against the lab"): 25 % where the model applies; for cpu-backlog, where the
docs say why it cannot, the model's two arrival assumptions must bracket the lab."""

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
    "listen-overflow": (-0.25, 0.25),
}
# cpu-backlog (docs/sim.md): a 2-packet backlog loses packets to the RPS CPU's wake-up
# latency, which no counter measures, and the lab itself spread 20x over runs (2-49 % of
# the burst lost). The model brackets it instead: smooth arrivals (poisson=false, 0 drops
# below saturation) <= measured <= random arrivals (M/M/1/K) at the measured per-packet cost.
BRACKET_SLACK = 2.0


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


def test_cpu_backlog_is_bracketed_by_smooth_and_random_arrivals(runs, rows):
    from dropdoc.sim import simulate

    run, row = runs["cpu-backlog"], rows["cpu-backlog"]
    assert row.measured_per_s and row.measured_per_s > 0, "cpu-backlog: the lab produced no drops"
    params, _, _ = validate.params_for(run)
    assert params.poisson and "rx_cost_us" in row.params, "the per-packet cost was not measured"
    smooth = simulate(params.replace(poisson=False), seconds=run.seconds).drops_per_s["cpu.backlog_drop"]
    detail = (f"smooth {smooth:.1f}/s, measured {row.measured_per_s:.1f}/s, random {row.predicted_per_s:.1f}/s; "
              f"params {row.params}")
    assert smooth <= row.measured_per_s * BRACKET_SLACK, detail
    assert row.measured_per_s <= row.predicted_per_s * BRACKET_SLACK, detail


def test_cpu_backlog_what_if_the_fix_is_applied(runs):
    """What `dropdoc fix` relies on even where the rate is only an order of magnitude: the
    model says the lab's proposed netdev_max_backlog (8192, verified to 0 drops by
    test_lab_fixes) stops these drops, and that the value in force (1) does not."""
    from dropdoc.sim import simulate

    run = runs["cpu-backlog"]
    params, _, _ = validate.params_for(run)
    assert params.netdev_max_backlog == 1
    assert simulate(params, seconds=run.seconds).drops["cpu.backlog_drop"] > 0
    fixed = simulate(params.replace(netdev_max_backlog=8192), seconds=run.seconds)
    assert fixed.drops["cpu.backlog_drop"] < 0.5


def test_settings_come_from_the_calibration_path_and_load_from_the_programs(rows):
    udp, qdisc, listen = rows["udp-rcvbuf"], rows["qdisc-drop"], rows["listen-overflow"]
    # what the lab set up, read back through dropdoc.sim.calibrate from the window
    assert udp.params["udp_rcvbuf"] == 4096 and udp.sources["udp_rcvbuf"].startswith("calibrate:")
    assert qdisc.params["link_rate_bps"] == 100e6 and qdisc.params["qdisc_limit_bytes"] == 20480
    assert qdisc.sources["shaper_burst_bytes"].startswith("calibrate:")
    assert listen.params["somaxconn"] == 16 and listen.sources["somaxconn"].startswith("calibrate:")
    # the load the programs really sent, not the window's averages
    assert udp.params["udp_total"] >= 2900 and udp.sources["udp_rate"].startswith("sender summary")
    assert qdisc.params["tx_total"] == 2000


def test_markdown_table_has_every_row(rows):
    table = validate.markdown(list(rows.values()))
    assert table.count("\n") == 1 + len(rows)
    for name in validate.SCENARIOS:
        assert f"| {name} |" in table


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
