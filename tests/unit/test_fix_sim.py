"""dropdoc fix with the simulator: measured rates -> burst, sentence, needed somaxconn and
predicted drops/s before -> after; sustained overload said as such; a plan without the
simulator still works. Offline plans (live=False), the real model (dropdoc.sim)."""

from __future__ import annotations

import json
import sys

import pytest

from dropdoc.fix import sim_support
from dropdoc.fix.plan import PLANNED, make_plan
from dropdoc.fix.render import plan_lines
from dropdoc.fix.sim_support import listen_load, predicted_line
from dropdoc.model import SCHEMA

pytest.importorskip("dropdoc.sim.sizing")


def listen_finding(drops=21, passive=12500, backlog=128, full=3, samples=50, capped_by="somaxconn",
                   proposed=1024, current=128) -> dict:
    """A tcp.listen_overflow finding as the JSON contract carries it (what the enricher writes)."""
    return {"id": "tcp.listen_overflow", "layer": "transport", "severity": "critical", "drops": drops,
            "rate_per_s": drops / 5.0, "benign": False, "summary": "",
            "evidence": [{"source": "counters", "counter": "TcpExt.ListenOverflows", "delta": drops},
                         {"source": "counters", "counter": "Tcp.PassiveOpens", "delta": passive}],
            "subjects": [{"socket": "0.0.0.0:8080", "pid": 4242, "process": "payments", "backlog": backlog,
                          "somaxconn": current, "capped_by": capped_by, "accept_queue": backlog + 1,
                          "full_samples": full, "samples": samples}],
            "fixes": [{"kind": "sysctl", "key": "net.core.somaxconn", "current": current, "proposed": proposed,
                       "netns": "srv", "scope": "per network namespace", "note": ""}]}


def diagnosis(*findings: dict, seconds: float = 5.0) -> dict:
    return {"schema": SCHEMA, "host": {"kernel": "6.18.0", "netns": "srv"}, "window": {"seconds": seconds},
            "healthy": False, "findings": list(findings)}


def somaxconn_change(plan):
    return next(c for c in plan.changes if c.target == "net.core.somaxconn")


# --- the measured load: pure arithmetic on the finding ---------------------------------------

def test_listen_load_rates_from_counters_and_samples():
    load = listen_load(listen_finding(), 5.0)
    assert load.accept_per_s == pytest.approx(2500.0)        # PassiveOpens 12500 / 5 s
    assert load.burst_s == pytest.approx(0.3)                 # full in 3 of 50 samples of 5 s
    # during the burst: accepted + (backlog + 1 + dropped) / burst = 2500 + 150 / 0.3
    assert load.arrival_per_s == pytest.approx(3000.0)
    assert load.average_arrival_per_s == pytest.approx((12500 + 21) / 5.0)
    assert not load.whole_window


@pytest.mark.parametrize("change", [
    {"evidence": []},                                  # no PassiveOpens: no accept rate
    {"subjects": []},                                  # no listener: no backlog in force
    {"drops": 0},
])
def test_listen_load_is_none_without_the_numbers_it_needs(change):
    assert listen_load({**listen_finding(), **change}, 5.0) is None
    assert listen_load(listen_finding(), None) is None


def test_unsampled_listener_spreads_the_burst_over_the_window():
    load = listen_load(listen_finding(full=0, samples=0), 5.0)
    assert load.full_fraction is None and load.burst_s == 5.0


# --- the sentence and verdict (given model outputs) ------------------------------------------

def test_sentence_in_the_issue_style_with_real_numbers():
    load = listen_load(listen_finding(), 5.0)
    verdict = sim_support._listen_verdict(load, 128, 1024, needed=151, before=4.2, after=0.0)
    assert verdict.text.startswith("somaxconn 1024 absorbs a 300 ms burst at the measured 3,000 conn/s "
                                   "with the app accepting at 2,500/s")
    assert "smallest queue without drops is 151" in verdict.text
    assert not verdict.sustained
    assert verdict.inputs["arrival_per_s"] == 3000.0 and verdict.inputs["accept_per_s"] == 2500.0


def test_queue_full_all_window_is_sustained_overload():
    load = listen_load(listen_finding(full=48, drops=4000, passive=500), 5.0)
    verdict = sim_support._listen_verdict(load, 128, 1024, needed=900, before=800.0, after=790.0)
    assert verdict.sustained
    assert verdict.text.startswith("sustained overload: a bigger queue only delays drops")
    assert "for 4.8 s of the 5.0 s window" in verdict.text


def test_no_size_helps_is_sustained_overload():
    load = listen_load(listen_finding(), 5.0)
    verdict = sim_support._listen_verdict(load, 128, 1024, needed=None, before=4.0, after=4.0)
    assert verdict.sustained and "65,535 slots" in verdict.text


def test_long_drain_is_said():
    load = listen_load(listen_finding(passive=250, drops=1200, backlog=16), 5.0)  # accepts 50/s
    verdict = sim_support._listen_verdict(load, 16, 2048, needed=1217, before=240.0, after=0.0)
    assert "waits up to 24.3 s in the queue" in verdict.text


def test_app_capped_backlog_names_the_listen_argument():
    load = listen_load(listen_finding(capped_by="listen() backlog"), 5.0)
    verdict = sim_support._listen_verdict(load, 4096, 1024, needed=151, before=4.2, after=0.0)
    assert verdict.text.endswith("(once the application asks listen() for at least 1024)")


@pytest.mark.parametrize("proposed,needed,ok", [(1024, 1000, True), (960, 1000, True), (900, 1000, False),
                                                 (1024, None, False)])
def test_enough_allows_the_models_precision(proposed, needed, ok):
    assert sim_support.enough(proposed, needed) is ok


def test_predicted_line():
    assert predicted_line({"predicted_before_per_s": 241.2, "predicted_after_per_s": 0.0}) == \
        "predicted by the simulator (same burst): 241.2 -> 0.0 drops/s"
    assert "for 60 s" in predicted_line({"predicted_before_per_s": 80.0, "predicted_after_per_s": 78.0,
                                         "horizon_seconds": 60.0})
    assert predicted_line({"predicted_before_per_s": None, "predicted_after_per_s": 0.0}) == ""


# --- through the real model --------------------------------------------------------------------

def test_model_reproduces_the_measured_rate_and_absorbs_with_the_proposal():
    finding = listen_finding(drops=1206, passive=293, backlog=16, full=9, samples=52, current=16, proposed=2048)
    found = sim_support.justify(finding, "net.core.somaxconn", 16, 2048, 5.0)
    # the burst is derived from the window, so the model must give back its drop rate
    assert found.before_per_s == pytest.approx(1206 / 5.0, rel=0.05)
    assert found.after_per_s == 0.0
    assert 1100 <= found.needed <= 1300                       # backlog + 1 + drops = 1223
    assert not found.sustained


def test_model_sustained_steady_state_barely_improves():
    finding = listen_finding(drops=4000, passive=500, full=49, samples=50)
    found = sim_support.justify(finding, "net.core.somaxconn", 128, 1024, 5.0)
    assert found.sustained and found.inputs["horizon_seconds"] == 60.0
    assert found.after_per_s > 0.8 * found.before_per_s > 0  # the bigger queue only delays


def test_other_changes_get_no_simulation():
    finding = {**listen_finding(), "id": "tcp.syn_queue_full"}
    assert sim_support.justify(finding, "net.core.somaxconn", 128, 1024, 5.0) is None
    assert sim_support.justify(listen_finding(), "net.ipv4.tcp_max_syn_backlog", 128, 1024, 5.0) is None


# --- in the plan ---------------------------------------------------------------------------------

def test_plan_text_and_json_carry_justification_and_predicted_effect():
    plan = make_plan(diagnosis(listen_finding()), live=False)
    change = somaxconn_change(plan)
    assert change.status == PLANNED and change.proposed == 1024        # the enricher's value, justified
    record = json.loads(json.dumps(plan.to_dict()))["changes"][0]
    simulation = record["simulation"]
    assert simulation["model"] == "dropdoc.sim" and simulation["sustained"] is False
    assert simulation["predicted_before_per_s"] == pytest.approx(21 / 5.0, rel=0.1)
    assert simulation["predicted_after_per_s"] == 0.0
    assert set(simulation["inputs"]) >= {"arrival_per_s", "accept_per_s", "burst_seconds"}
    assert {"why", "current", "proposed", "status"} <= set(record)      # nothing renamed
    text = "\n".join(plan_lines(plan))
    assert "simulator: somaxconn 1024 absorbs a 300 ms burst at the measured 3,000 conn/s" in text
    predicted = f"predicted by the simulator (same burst): {simulation['predicted_before_per_s']:.1f} -> 0.0 drops/s"
    assert predicted in text


def test_plan_raises_a_proposal_the_model_shows_too_small():
    finding = listen_finding(drops=1000, backlog=128, proposed=256)
    change = somaxconn_change(make_plan(diagnosis(finding), live=False))
    assert change.proposed == change.change.value == 2048         # needs 1129 -> power of two
    assert change.simulation["raised_from"] == 256
    assert "raised to 2048" in change.why
    assert change.simulation["predicted_after_per_s"] == 0.0


def test_plan_without_the_simulator_still_works(monkeypatch):
    for name in ("dropdoc.sim", "dropdoc.sim.sizing"):
        monkeypatch.setitem(sys.modules, name, None)   # `import` of it now fails
    plan = make_plan(diagnosis(listen_finding()), live=False)
    change = somaxconn_change(plan)
    assert change.status == PLANNED and change.proposed == 1024 and change.simulation is None
    notes = [n for n in plan.notes if "simulator" in n]
    assert len(notes) == 1 and "\n" not in notes[0] and "not available" in notes[0]
    assert "simulator:" not in "\n".join(plan_lines(plan))


def test_malformed_finding_never_breaks_the_plan():
    finding = listen_finding()
    finding["subjects"][0]["samples"] = "fifty"
    finding["evidence"][1]["delta"] = 12500.5
    plan = make_plan(diagnosis(finding), live=False)
    assert somaxconn_change(plan).status == PLANNED
