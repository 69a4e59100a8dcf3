"""The simulator's justification in `dropdoc fix` on the real kernel, for udp.rcvbuf_full and
cpu.backlog_drop: the window's samples give the burst, the model replays it, and the plan's
prediction is checked against what the kernel then does.

- a UDP burst a reader keeps up with on average (800 datagrams at 10,000/s into a 128 KiB
  buffer read at 2,000/s): the SO_RCVBUF the plan names absorbs it - predicted drops/s
  before within 25 % of the measured rate, 0 after - and with that SO_RCVBUF the kernel
  drops nothing;
- the lab's udp-rcvbuf (a reader at 50/s under 1,000/s for 3 s): sustained overload, the
  reader must take ~1,000/s, a bigger buffer only delays the drops;
- the lab's cpu-backlog with --fix: netdev_max_backlog justified by the burst, predicted
  before within 25 % of the measured rate, 0 after, and the fix verified.

Each run is a few seconds of bounded traffic between a lab's own namespaces (~20 s in all).
"""

from __future__ import annotations

import pytest

from dropdoc.diagnose import diagnose
from dropdoc.fix.plan import make_plan
from dropdoc.lab import scenarios
from dropdoc.lab.model import CLIENT, SERVER, Program
from dropdoc.lab.topology import SERVER_ADDRESS, LabNet

from .conftest import requires_root

pytestmark = [requires_root, pytest.mark.functional]

BOUND = 0.25   # predicted vs measured drops/s over the same window (docs/sim.md validates to 25 %)


def udp_burst_window(rcvbuf: int) -> dict:
    """One 3 s window of a 10,000/s burst of 800 datagrams into a socket with SO_RCVBUF
    `rcvbuf` (forced) read at 2,000/s; the diagnosis JSON."""
    with LabNet() as lab:
        sink = scenarios._start(lab, Program(SERVER, "dropdoc.lab.udp_sink", (
            "--port", "9000", "--rcvbuf", str(rcvbuf), "--rcvbuf-force", "--read-rate", "2000", "--name", "metrics",
            "--max-seconds", "20"), wait_ready=True))
        loads = []
        burst = Program(CLIENT, "dropdoc.lab.udp_burst", ("--target", f"{SERVER_ADDRESS}:9000", "--packets", "800",
                                                          "--size", "512", "--rate", "10000", "--max-seconds", "2"))
        try:
            result = diagnose(lab.server_ns, 3.0, on_start=lambda: loads.append(scenarios._start(lab, burst)))
            assert scenarios._collect_load(lab, loads)["sent"] == 800
        finally:
            lab.stop(sink)
    return result.to_dict()


def finding(diagnosis: dict, finding_id: str) -> dict | None:
    return next((f for f in diagnosis["findings"] if f["id"] == finding_id), None)


def test_udp_burst_buffer_named_by_the_simulator_absorbs_it(no_leftovers):
    before = udp_burst_window(65536)                      # a 128 KiB buffer holds ~100 datagrams
    measured = finding(before, "udp.rcvbuf_full")
    assert measured is not None and measured["drops"] > 100
    action = next(a for a in make_plan(before, live=False).actions if a.get("simulation")
                  and a["simulation"]["target"] == "SO_RCVBUF")
    simulation = action["simulation"]
    assert simulation["sustained"] is False, simulation["text"]
    assert simulation["text"].startswith("SO_RCVBUF 512 KiB (a 1 MiB buffer: the kernel doubles it) absorbs a ")
    assert simulation["inputs"]["datagram_bytes"] in range(500, 520)    # 512 sent, from rx_bytes/rx_packets
    assert simulation["predicted_before_per_s"] == pytest.approx(measured["rate_per_s"], rel=BOUND)
    assert simulation["predicted_after_per_s"] == 0.0
    # ... and the kernel agrees: the same burst with that SO_RCVBUF drops nothing
    after = udp_burst_window(action_so_rcvbuf(before))
    assert finding(after, "udp.rcvbuf_full") is None


def action_so_rcvbuf(diagnosis: dict) -> int:
    fix = next(f for f in finding(diagnosis, "udp.rcvbuf_full")["fixes"] if f.get("setting") == "SO_RCVBUF")
    return fix["proposed"]


def test_udp_rcvbuf_lab_is_sustained_and_names_the_reader_speed(no_leftovers):
    result = scenarios.run("udp-rcvbuf")
    diagnosis = result.before.diagnosis.to_dict()
    plan = make_plan(diagnosis, live=False)
    reader = next(a["simulation"] for a in plan.actions if (a.get("simulation") or {}).get("target") == "reader speed")
    assert reader["sustained"] and "the reader must take at least" in reader["text"]
    assert 800 <= reader["needed"] <= 1100                   # the lab sends 1,000/s
    assert reader["predicted_after_per_s"] == 0.0
    buffer = next(a["simulation"] for a in plan.actions if (a.get("simulation") or {}).get("target") == "SO_RCVBUF")
    assert buffer["sustained"] and buffer["text"].startswith("sustained overload: a bigger buffer only delays drops")


def test_cpu_backlog_fix_is_justified_and_the_prediction_holds(no_leftovers):
    result = scenarios.run("cpu-backlog", fix=True)
    measured = result.before.diagnosis.finding("cpu.backlog_drop")
    assert measured is not None
    change = next(c for c in result.fix_report.plan.changes if c.target == "net.core.netdev_max_backlog")
    simulation = change.simulation
    assert simulation is not None, result.fix_report.plan.notes
    assert not simulation["sustained"] and simulation["inputs"]["sampled"] is True
    assert simulation["text"].startswith(f"netdev_max_backlog {change.proposed:,} absorbs a ")
    assert simulation["predicted_before_per_s"] == pytest.approx(measured.rate_per_s, rel=BOUND)
    assert simulation["predicted_after_per_s"] == 0.0
    assert change.proposed >= simulation["needed"]
    assert [c.verdict for c in result.fix_report.verification.checks] == ["fixed"]
