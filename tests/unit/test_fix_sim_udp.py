"""dropdoc fix with the simulator for udp.rcvbuf_full: the measured burst -> which buffer
absorbs it (rmem_default, rmem_max as the cap, the application's SO_RCVBUF), or sustained
overload -> the reader must get faster, with predicted drops/s before -> after. Offline
plans (live=False), the real model (dropdoc.sim)."""

from __future__ import annotations

import json
import sys

import pytest

from dropdoc.fix import sim_support
from dropdoc.fix.plan import PLANNED, make_plan
from dropdoc.fix.render import plan_lines
from dropdoc.fix.sim_support import Burst
from dropdoc.fix.sim_support_udp import (
    ASSUMED_DATAGRAM,
    buffer_verdict,
    justify_reader,
    justify_so_rcvbuf,
    udp_load,
)
from dropdoc.model import SCHEMA

pytest.importorskip("dropdoc.sim.sizing")

DEFAULT = 212992


def udp_finding(drops=908, read=50000, burst=(0.2, 908, 3000), samples=50, drop_samples=2, size=1400,
                rcvbuf=DEFAULT, rmem_default=DEFAULT, rmem_max=DEFAULT, fixes=None) -> dict:
    """A udp.rcvbuf_full finding as the udp_sockets enricher writes it. Default: a reader at
    15,000/s that keeps up on average, and one 200 ms burst at 20,000/s of 1,400-byte
    datagrams: 3,000 read, 92 held by a 208 KiB buffer (truesize 2,304), 908 dropped."""
    window = {"source": "window", "datagrams_read": read, "datagrams_arrived": read + drops,
              "rmem_default": rmem_default, "rmem_max": rmem_max}
    if burst is not None:
        seconds, burst_drops, burst_read = burst
        window |= {"samples": samples, "drop_samples": drop_samples, "sampled_seconds": 5.0, "bursts": 1,
                   "burst_seconds": seconds, "burst_drops": burst_drops, "burst_read": burst_read}
    evidence = [{"source": "counters", "counter": "Udp.RcvbufErrors", "delta": drops}, window]
    if size is not None:
        evidence.append({"source": "netdev", "interface": "eth0", "rx_packets": read + drops,
                         "rx_bytes": (read + drops) * (size + 42), "datagram_bytes": size})
    if fixes is None:
        fixes = [{"kind": "sysctl", "key": "net.core.rmem_default", "current": rmem_default, "proposed": 524288,
                  "netns": None, "note": ""},
                 {"kind": "sysctl", "key": "net.core.rmem_max", "current": rmem_max, "proposed": 524288,
                  "netns": None, "note": ""},
                 {"kind": "app", "setting": "reader speed", "text": "pid 4242 (metrics) reads datagrams more "
                  "slowly than they arrive: set SO_RCVBUF, read in batches (recvmmsg), or spread the load"}]
    return {"id": "udp.rcvbuf_full", "layer": "transport", "severity": "critical", "drops": drops,
            "rate_per_s": drops / 5.0, "benign": False, "summary": "", "evidence": evidence,
            "subjects": [{"socket": "0.0.0.0:9000", "pid": 4242, "process": "metrics", "drops": drops,
                          "rx_queue": 0, "rcvbuf": rcvbuf}],
            "fixes": fixes}


def own_rcvbuf_fix(asked=4096, wanted=524288) -> dict:
    return {"kind": "app", "setting": "SO_RCVBUF", "socket": "0.0.0.0:9000", "current": asked, "proposed": wanted,
            "text": f"pid 4242 (metrics) sets SO_RCVBUF={asked} on 0.0.0.0:9000: make it ask for at least {wanted}"}


def sustained_finding(**changes) -> dict:
    """The lab's udp-rcvbuf: a reader at 50/s, 1,000 datagrams/s of 512 bytes for 3 s, an
    8 KiB buffer (SO_RCVBUF 4096) - what `dropdoc lab run udp-rcvbuf` measured."""
    values = {"drops": 2844, "read": 155, "burst": (3.039, 2844, 150), "samples": 35, "drop_samples": 30,
              "size": 511, "rcvbuf": 8192, "rmem_max": 4194304,
              "fixes": [{"kind": "app", "setting": "reader speed", "text": "reads datagrams more slowly"},
                        own_rcvbuf_fix()]}
    return udp_finding(**(values | changes))


def diagnosis(*findings: dict, seconds: float = 5.0) -> dict:
    """Measured in the host namespace: rmem_* are global, planned only there."""
    return {"schema": SCHEMA, "host": {"kernel": "6.18.0", "netns": None}, "window": {"seconds": seconds},
            "healthy": False, "findings": list(findings)}


def change(plan, key):
    return next(c for c in plan.changes if c.target == key)


# --- the measured load: pure arithmetic on the finding ---------------------------------------

def test_load_rates_from_the_burst():
    load = udp_load(udp_finding(), 5.0)
    assert load.burst == Burst(0.2, 908, 3000, True, 2 / 50)
    assert load.read_per_s == pytest.approx(15000.0)
    assert load.arrival_per_s(92) == pytest.approx(20000.0)     # 15,000 + (92 + 908) / 0.2
    assert load.average_read_per_s == 10000.0 and not load.reader_behind
    assert (load.rcvbuf, load.payload, load.rmem_max) == (DEFAULT, 1400, DEFAULT)


def test_unsampled_window_is_one_burst_and_unknown_size_is_assumed():
    load = udp_load(udp_finding(burst=None, size=None), 5.0)
    assert load.burst == Burst(5.0, 908, 50000, False, None)
    assert load.datagram_bytes is None and load.payload == ASSUMED_DATAGRAM


@pytest.mark.parametrize("change", [
    {"evidence": []},                                      # no datagrams read: no reader speed
    {"drops": 0},
    {"id": "udp.memory"},
])
def test_load_is_none_without_the_numbers_it_needs(change):
    assert udp_load({**udp_finding(), **change}, 5.0) is None
    assert udp_load(udp_finding(), None) is None


def test_reader_behind_on_average_is_the_enrichers_sustained():
    load = udp_load(sustained_finding(), 3.5)
    assert load.reader_behind and not load.burst.whole_window          # 30 of 35 samples
    assert load.read_per_s == pytest.approx(150 / 3.039)


# --- the sentences (given model outputs) --------------------------------------------------------

def test_sentence_in_the_issue_style():
    load = udp_load(udp_finding(), 5.0)
    verdict = buffer_verdict(load, "rmem_default 4 MiB", 4 << 20, 2304000, 20000.0, "net.core.rmem_default",
                             DEFAULT, 4 << 20, 2304000, 181.6, 0.0)
    assert verdict.text == ("rmem_default 4 MiB absorbs a 200 ms burst of 1,400-byte datagrams at 20,000/s with "
                            "the reader at 15,000/s: the simulator's smallest buffer without drops is 2.2 MiB "
                            "(82 % headroom)")
    assert not verdict.sustained and verdict.inputs["arrival_per_s"] == 20000.0


def test_too_small_and_unknown_size_are_said():
    load = udp_load(udp_finding(size=None), 5.0)
    verdict = buffer_verdict(load, "rmem_default 512 KiB", 524288, 2304000, 20000.0, "net.core.rmem_default",
                             DEFAULT, 524288, 2304000, 181.6, 100.0)
    assert verdict.text.startswith("rmem_default 512 KiB is too small for a 200 ms burst of datagrams of "
                                   "unknown size (1,472 bytes assumed)")
    assert verdict.text.endswith("the simulator needs a buffer of at least 2.2 MiB")


def test_sustained_sentence_says_a_bigger_buffer_only_delays():
    load = udp_load(sustained_finding(), 3.5)
    verdict = buffer_verdict(load, "SO_RCVBUF 512 KiB", 1 << 20, 3649280, 987.0, "SO_RCVBUF", 4096, 524288,
                             1824640, 937.7, 924.2)
    assert verdict.sustained
    assert verdict.text.startswith("sustained overload: a bigger buffer only delays drops - datagrams arrive at "
                                   "987/s while the reader takes 49/s for 3.0 s of the 3.5 s window")


# --- through the real model ----------------------------------------------------------------------

def test_model_reproduces_the_burst_and_sizes_the_buffer():
    found = sim_support.justify(udp_finding(), "net.core.rmem_default", DEFAULT, 4 << 20, 5.0)
    assert found.before_per_s == pytest.approx(908 / 5.0, rel=0.05)   # the measured rate comes back
    assert found.after_per_s == 0.0 and not found.sustained
    # 1,000 datagrams (held + dropped) of truesize 2,304 bytes
    assert 0.95 * 1000 * 2304 <= found.needed <= 1.05 * 1000 * 2304
    assert found.text.startswith("rmem_default 4 MiB absorbs a 200 ms burst of 1,400-byte datagrams at "
                                 "20,000/s with the reader at 15,000/s")


def test_rmem_max_is_justified_only_when_it_caps_the_socket():
    capped = udp_finding(rcvbuf=2 * DEFAULT)             # SO_RCVBUF asked for at least rmem_max
    found = sim_support.justify(capped, "net.core.rmem_max", DEFAULT, 2 << 20, 5.0)
    assert found.after_per_s == 0.0 and found.inputs["buffer_after"] == 4 << 20
    assert found.text.startswith("rmem_max 2 MiB (a 4 MiB buffer once the application asks SO_RCVBUF for it")
    assert sim_support.justify(udp_finding(), "net.core.rmem_max", DEFAULT, 2 << 20, 5.0) is None


def test_sustained_reader_must_be_faster():
    finding = sustained_finding()
    reader = justify_reader(finding, finding["fixes"][0], 3.5)
    assert reader.sustained and reader.target == "reader speed"
    assert 950 <= reader.needed <= 1010                        # the burst's arrival rate (1,000/s sent)
    assert reader.after_per_s == 0.0 and reader.before_per_s > 900
    assert "the reader must take at least" in reader.text and "a bigger buffer only delays" in reader.text
    bigger = justify_so_rcvbuf(finding, finding["fixes"][1], 3.5)
    assert bigger.sustained and bigger.inputs["horizon_seconds"] == 60.0
    assert bigger.after_per_s > 0.9 * bigger.before_per_s      # the steady state: it only delayed them


def test_reader_speed_is_not_justified_for_bursts():
    finding = udp_finding()
    assert justify_reader(finding, finding["fixes"][2], 5.0) is None


def test_so_rcvbuf_above_rmem_max_names_the_cap():
    finding = udp_finding(rcvbuf=8192, fixes=[own_rcvbuf_fix(wanted=4 << 20)])
    found = justify_so_rcvbuf(finding, finding["fixes"][0], 5.0)
    assert "capped by rmem_max 208 KiB to a 416 KiB buffer" in found.text
    assert "too small" in found.text and found.after_per_s > 0


# --- in the plan -----------------------------------------------------------------------------------

def test_plan_raises_rmem_default_and_rmem_max_with_it():
    plan = make_plan(diagnosis(udp_finding()), live=False)
    default, maximum = change(plan, "net.core.rmem_default"), change(plan, "net.core.rmem_max")
    assert default.proposed == default.change.value == 4 << 20            # needs ~2.2 MiB -> power of two
    assert default.simulation["raised_from"] == 524288 and "raised to 4194304" in default.why
    assert default.simulation["predicted_after_per_s"] == 0.0
    assert maximum.proposed == 4 << 20 and "rmem_max must stay at least rmem_default" in maximum.why
    assert default.status == maximum.status == PLANNED                   # the relation holds
    text = "\n".join(plan_lines(plan))
    assert "simulator: rmem_default 4 MiB absorbs a 200 ms burst of 1,400-byte datagrams" in text


def test_plan_adds_rmem_max_when_the_raise_passes_it():
    finding = udp_finding()
    finding["fixes"] = [f for f in finding["fixes"] if f.get("key") != "net.core.rmem_max"]
    plan = make_plan(diagnosis(finding), live=False)
    maximum = change(plan, "net.core.rmem_max")
    assert (maximum.current, maximum.proposed, maximum.status) == (DEFAULT, 4 << 20, PLANNED)
    assert maximum.findings == ["udp.rcvbuf_full"]


def test_plan_actions_carry_the_simulation_in_text_and_json():
    plan = make_plan(diagnosis(sustained_finding(), seconds=3.5), live=False)
    assert plan.changes == []
    actions = json.loads(json.dumps(plan.to_dict()))["actions"]
    reader, rcvbuf = actions
    assert reader["simulation"]["target"] == "reader speed" and reader["simulation"]["predicted_after_per_s"] == 0.0
    assert rcvbuf["simulation"]["sustained"] is True
    text = "\n".join(plan_lines(plan))
    assert "      simulator: sustained overload: datagrams arrive at" in text
    assert "predicted by the simulator (the same rates for 60 s):" in text


def test_plan_without_the_simulator_keeps_its_actions(monkeypatch):
    for name in ("dropdoc.sim", "dropdoc.sim.sizing"):
        monkeypatch.setitem(sys.modules, name, None)
    plan = make_plan(diagnosis(sustained_finding(), seconds=3.5), live=False)
    assert len(plan.actions) == 2 and not any(a.get("simulation") for a in plan.actions)
    notes = [n for n in plan.notes if "simulator" in n]
    assert notes and all("not available" in n and "\n" not in n for n in notes)
    assert "simulator:" not in "\n".join(plan_lines(plan))


def test_old_diagnosis_without_load_evidence_plans_as_before():
    finding = udp_finding()
    finding["evidence"] = finding["evidence"][:1]
    plan = make_plan(diagnosis(finding), live=False)
    assert change(plan, "net.core.rmem_default").proposed == 524288
    assert all(c.simulation is None for c in plan.changes) and plan.notes == []
