"""Rule cases of the link layer: hand-built windows (rtnl counters from windows.Host, driver
statistics from the captured and hand-made ethtool fixtures) -> expected findings."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from dropdoc import rules
from dropdoc.diagnose import diagnosis_from_window
from dropdoc.rules.engine import load_rules
from dropdoc.sources import SourceResult, ethtool
from dropdoc.sources.ethtool import EthtoolData

from windows import Host, make_window

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ethtool"
HANDMADE = json.loads((FIXTURES / "handmade.json").read_text())
VETH = ethtool.parse(json.loads((FIXTURES / "recorded_veth.json").read_text())).interfaces["veth0"]
LINK_RULES = tuple(r for r in load_rules() if r.layer == "link")
LINK_IDS = ("nic.rx_missed", "nic.errors", "nic.tx_errors", "cloud.allowance_exceeded")


def nic(name: str) -> ethtool.Nic:
    return ethtool.parse_record(HANDMADE[name])


class LinkHost:
    """windows.Host plus the ethtool source (None: the source is not in the snapshot at all)."""

    def __init__(self, nics: dict[str, ethtool.Nic] | None = None, netns: str | None = "srv"):
        self.host = Host(netns=netns)
        self.nics = nics
        self.ethtool_status = "ok"
        for name in nics or {}:
            if name not in self.host.link:
                self.host.link[name] = dict.fromkeys((*self.host.link["eth0"], "carrier_changes",
                                                      "carrier_up_count", "carrier_down_count"), 0)

    def bump(self, device: str, counter: str, by: int) -> None:
        """rtnl/sysfs counter (link.<device>.<counter>), created at 0 when missing."""
        table = self.host.link[device]
        table[counter] = table.get(counter, 0) + by

    def bump_stat(self, device: str, stat: str, by: int) -> None:
        old = self.nics[device]
        self.nics[device] = dataclasses.replace(old, stats={**old.stats, stat: old.stats[stat] + by})

    def snapshot(self, t: float):
        snap = self.host.snapshot(t)
        if self.nics is not None:
            if self.ethtool_status == "ok":
                snap.results["ethtool"] = SourceResult("ok", EthtoolData(copy.deepcopy(self.nics)))
            else:
                snap.results["ethtool"] = SourceResult(self.ethtool_status, error="SIOCETHTOOL: boom")
        return snap


def window_of(lh: LinkHost, change, seconds: float = 5.0):
    before = lh.snapshot(0.0)
    change(lh)
    return make_window(before, lh.snapshot(seconds))


def evaluate(window, all_rules: bool = False):
    findings, not_evaluated = rules.evaluate(window, None if all_rules else LINK_RULES)
    return {f.id: f for f in findings}, [f.id for f in findings], not_evaluated


def fixes(finding, kind):
    return [f for f in finding.fixes if f["kind"] == kind]


def evidence(finding, counter):
    return next(e["delta"] for e in finding.evidence if e.get("counter") == counter)


# --- one positive case per id ---------------------------------------------------------------

def rx_missed(lh: LinkHost) -> None:
    lh.bump("eth0", "rx_missed_errors", 4000)
    lh.bump_stat("eth0", "rx_missed_errors", 4000)
    lh.bump_stat("eth0", "rx_no_dma_resources", 4000)
    lh.bump_stat("eth0", "rx_no_buffer_count", 120)


def crc_errors(lh: LinkHost) -> None:
    lh.bump("eth0", "rx_crc_errors", 40)
    lh.bump("eth0", "rx_errors", 40)
    lh.bump_stat("eth0", "rx_crc_errors", 40)


def tx_errors(lh: LinkHost) -> None:
    lh.bump("eth0", "tx_dropped", 30)
    lh.bump("eth0", "tx_errors", 10)
    lh.bump("eth0", "tx_aborted_errors", 4)
    lh.bump("eth0", "tx_fifo_errors", 8)


def allowance(lh: LinkHost) -> None:
    lh.bump_stat("eth0", "pps_allowance_exceeded", 4200)
    lh.bump_stat("eth0", "bw_in_allowance_exceeded", 150)
    lh.bump("eth0", "rx_packets", 400_000)
    lh.bump("eth0", "tx_packets", 100_000)
    lh.bump("eth0", "rx_bytes", 500_000_000)


POSITIVE = {
    "nic.rx_missed": ("ixgbe", rx_missed),
    "nic.errors": ("e1000e_old", crc_errors),
    "nic.tx_errors": ("ixgbe", tx_errors),
    "cloud.allowance_exceeded": ("ena", allowance),
}


def test_every_link_rule_has_a_case():
    assert set(POSITIVE) == {r.id for r in LINK_RULES} == set(LINK_IDS)


@pytest.mark.parametrize("rule_id", sorted(POSITIVE))
def test_positive_fires_only_its_rule(rule_id):
    nic_name, change = POSITIVE[rule_id]
    by_id, ids, not_evaluated = evaluate(window_of(LinkHost({"eth0": nic(nic_name)}), change))
    assert ids == [rule_id]
    assert not_evaluated == {}
    finding = by_id[rule_id]
    assert finding.drops > 0 and str(finding.drops) in finding.summary
    assert finding.rate_per_s == pytest.approx(finding.drops / 5.0)
    assert finding.runbook == f"docs/runbook.md#{rule_id.replace('.', '-').replace('_', '-')}"
    assert finding.subjects and all(s["interface"] == "eth0" for s in finding.subjects)
    assert finding.fixes


@pytest.mark.parametrize("nics", [None, {"eth0": nic("ena")}, {"eth0": nic("ixgbe")}, {"veth0": VETH}])
def test_quiet_window_fires_nothing_and_evaluates_everything(nics):
    by_id, ids, not_evaluated = evaluate(window_of(LinkHost(nics), lambda lh: None))
    assert ids == [] and not_evaluated == {}


# --- nic.rx_missed --------------------------------------------------------------------------

def test_rx_missed_one_drop_counted_once_and_ring_raised_to_its_maximum():
    f = evaluate(window_of(LinkHost({"eth0": nic("ixgbe")}), rx_missed))[0]["nic.rx_missed"]
    # rtnl rx_missed_errors, ethtool rx_missed_errors and rx_no_dma_resources are the same 4000
    assert (f.drops, f.severity) == (4000, "critical")
    assert evidence(f, "ethtool.eth0.rx_no_buffer_count") == 120
    assert evidence(f, "link.eth0.rx_missed_errors") == 4000
    subject = f.subjects[0]
    assert subject["rx_missed_errors"] == subject["rx_no_dma_resources"] == 4000
    assert subject["rx_no_buffer_count"] == 120 and subject["driver"] == "ixgbe"
    assert (subject["rx_ring"], subject["rx_ring_max"], subject["queues"], subject["queues_max"]) == (512, 8192, 8, 63)
    ring = [x for x in fixes(f, "command") if x.get("setting") == "rx ring"]
    assert len(ring) == 1
    assert ring[0]["command"] == "ip netns exec srv ethtool -G eth0 rx 8192"
    assert (ring[0]["current"], ring[0]["proposed"]) == (512, 8192)
    assert "4000 packets missed in 5.0 s" in ring[0]["text"]
    assert not [x for x in fixes(f, "command") if "-L" in x["command"]]  # the ring first


def test_rx_missed_ring_at_maximum_proposes_queues_and_spread():
    maxed = nic("ixgbe_maxed")
    few_queues = dataclasses.replace(maxed, channels=dataclasses.replace(maxed.channels, combined=8))
    f = evaluate(window_of(LinkHost({"eth0": few_queues}, netns=None), rx_missed))[0]["nic.rx_missed"]
    commands = fixes(f, "command")
    assert not any("-G" in x["command"] for x in commands)
    assert [x["command"] for x in commands] == ["ethtool -L eth0 combined 63"]  # host: no netns prefix
    assert (commands[0]["current"], commands[0]["proposed"]) == (8, 63)
    spread = fixes(f, "config")
    assert len(spread) == 1 and "already at its maximum (8192)" in spread[0]["text"]
    assert "smp_affinity_list" in spread[0]["text"]


def test_rx_missed_ring_and_queues_at_maximum():
    f = evaluate(window_of(LinkHost({"eth0": nic("ixgbe_maxed")}), rx_missed))[0]["nic.rx_missed"]
    assert (f.subjects[0]["rx_ring"], f.subjects[0]["queues"]) == (8192, 63)
    assert fixes(f, "command") == []
    assert "already at its maximum" in fixes(f, "config")[0]["text"]


def test_rx_missed_driver_only_counter_old_kernel():
    lh = LinkHost({"eth0": nic("e1000e_old")})
    f = evaluate(window_of(lh, lambda h: h.bump_stat("eth0", "rx_no_buffer_count", 3)))[0]["nic.rx_missed"]
    assert (f.drops, f.severity) == (3, "warning")
    assert f.subjects[0]["rx_no_buffer_count"] == 3 and "queues" not in f.subjects[0]
    assert fixes(f, "command")[0]["command"] == "ip netns exec srv ethtool -G eth0 rx 4096"


def test_rx_missed_without_ethtool_keeps_the_generic_advice():
    lh = LinkHost(None)
    f = evaluate(window_of(lh, lambda h: h.bump("eth0", "rx_fifo_errors", 12)))[0]["nic.rx_missed"]
    assert f.drops == 12 and f.subjects == [{"interface": "eth0", "rx_fifo_errors": 12}]
    assert fixes(f, "command")[0]["command"] == "ip netns exec srv ethtool -g eth0"
    assert "ethtool -G eth0 rx <max>" in fixes(f, "command")[0]["text"]


def test_rx_missed_two_devices_add_up():
    lh = LinkHost({"eth0": nic("ixgbe"), "eth1": nic("ixgbe_maxed")})

    def both(h):
        rx_missed(h)
        h.bump("eth1", "rx_over_errors", 70)
        h.bump("eth1", "rx_fifo_errors", 70)
    f = evaluate(window_of(lh, both))[0]["nic.rx_missed"]
    assert f.drops == 4070
    assert [s["interface"] for s in f.subjects] == ["eth0", "eth1"]


# --- nic.errors -----------------------------------------------------------------------------

def test_crc_errors_counted_once_not_tunable():
    f = evaluate(window_of(LinkHost({"eth0": nic("e1000e_old")}), crc_errors))[0]["nic.errors"]
    assert (f.drops, f.severity, f.layer) == (40, "critical", "link")  # not 80: rtnl and ethtool agree
    assert evidence(f, "link.eth0.rx_errors") == 40
    assert f.subjects[0]["rx_crc_errors"] == 40 and f.subjects[0]["damaged_frames"] == 40
    assert f.subjects[0]["driver"] == "e1000e"
    assert "not tunable" in f.explanation
    assert [x["kind"] for x in f.fixes] == ["config"]
    assert "ethtool -m eth0" in f.fixes[0]["text"] and "e1000e" in f.fixes[0]["text"]


def test_frame_kinds_add_up_but_align_equals_frame():
    lh = LinkHost({"eth0": nic("e1000e_old")})

    def damaged(h):
        h.bump("eth0", "rx_crc_errors", 3)
        h.bump("eth0", "rx_frame_errors", 2)
        h.bump_stat("eth0", "rx_align_errors", 2)
        h.bump("eth0", "rx_length_errors", 1)
    f = evaluate(window_of(lh, damaged))[0]["nic.errors"]
    assert (f.drops, f.severity) == (6, "critical")


def test_link_flaps_alone_are_critical_with_no_drops_counted():
    lh = LinkHost({"eth0": nic("ixgbe")})
    for name in ("carrier_changes", "carrier_up_count", "carrier_down_count"):
        lh.bump("eth0", name, 2)

    def flap(h):
        h.bump("eth0", "carrier_changes", 6)
        h.bump("eth0", "carrier_up_count", 3)
        h.bump("eth0", "carrier_down_count", 3)
    by_id, ids, _ = evaluate(window_of(lh, flap))
    f = by_id["nic.errors"]
    assert ids == ["nic.errors"]
    assert (f.drops, f.severity, f.benign) == (0, "critical", False)
    assert "changed state 6 time(s)" in f.summary and "3 time(s) down" in f.summary
    assert evidence(f, "link.eth0.carrier_changes") == 6
    subject = f.subjects[0]
    assert (subject["carrier_changes"], subject["went_down"], subject["came_up"]) == (6, 3, 3)
    assert subject["link_now"] == "up"
    assert "link is down/up" in f.fixes[0]["text"]


def test_one_carrier_change_without_up_down_counts_is_a_warning():
    lh = LinkHost(None)
    lh.bump("eth0", "carrier_changes", 2)
    f = evaluate(window_of(lh, lambda h: h.bump("eth0", "carrier_changes", 1)))[0]["nic.errors"]
    assert (f.drops, f.severity) == (0, "warning")
    assert f.subjects[0] == {"interface": "eth0", "damaged_frames": 0, "carrier_changes": 1}


def test_veth_flap_points_at_its_peer():
    lh = LinkHost({"veth0": VETH})
    lh.bump("veth0", "carrier_changes", 4)

    def flap(h):
        h.bump("veth0", "carrier_changes", 2)
        h.bump("veth0", "carrier_down_count", 1)
        h.bump("veth0", "carrier_up_count", 1)
    f = evaluate(window_of(lh, flap))[0]["nic.errors"]
    assert f.severity == "critical"
    assert f.subjects[0]["peer_ifindex"] == 2 and f.subjects[0]["driver"] == "veth"
    assert "veth" in f.fixes[0]["text"] and "ifindex 2" in f.fixes[0]["text"]


def test_errors_not_evaluated_without_link_statistics():
    lh = LinkHost(None)
    lh.host.broken = {"link_stats": ("failed", "rtnetlink: boom")}
    _, ids, not_evaluated = evaluate(window_of(lh, lambda h: None))
    assert not_evaluated["nic.errors"] == "counters not available"
    assert not_evaluated["nic.tx_errors"] == "counters not available"
    assert "cloud.allowance_exceeded" not in not_evaluated


def test_errors_counter_reset_is_not_no_drops():
    lh = LinkHost(None)
    lh.bump("eth0", "carrier_changes", 9)
    f = evaluate(window_of(lh, lambda h: h.bump("eth0", "carrier_changes", -9)))
    assert f[2]["nic.errors"] == "counter reset during the window"


# --- nic.tx_errors --------------------------------------------------------------------------

def test_tx_errors_parts_not_counted_twice_and_tx_ring_fix():
    f = evaluate(window_of(LinkHost({"eth0": nic("ixgbe")}), tx_errors))[0]["nic.tx_errors"]
    # tx_dropped 30 + max(tx_errors 10, aborted 4 + fifo 8)
    assert (f.drops, f.severity) == (42, "critical")
    subject = f.subjects[0]
    assert (subject["tx_dropped"], subject["tx_errors"], subject["tx_aborted_errors"]) == (30, 12, 4)
    assert (subject["tx_ring"], subject["tx_ring_max"]) == (512, 8192)
    ring = fixes(f, "command")[0]
    assert ring["command"] == "ip netns exec srv ethtool -G eth0 tx 8192"
    assert "transmit queue N timed out" in fixes(f, "config")[0]["text"]


def test_tx_drops_on_a_veth_without_link_name_the_peer():
    lh = LinkHost({"veth0": VETH})
    f = evaluate(window_of(lh, lambda h: h.bump("veth0", "tx_dropped", 5000)))[0]["nic.tx_errors"]
    assert (f.drops, f.severity, f.benign) == (5000, "critical", False)
    subject = f.subjects[0]
    assert (subject["link_now"], subject["driver"], subject["peer_ifindex"]) == ("down", "veth", 2)
    assert "no link" in f.fixes[0]["text"] and "ifindex 2" in f.fixes[0]["text"]
    assert "no carrier" in f.explanation
    assert not fixes(f, "command")  # no ring to raise: the link is the cause


def test_tx_stray_drops_on_a_device_without_link_are_benign():
    lh = LinkHost({"veth0": VETH})
    f = evaluate(window_of(lh, lambda h: h.bump("veth0", "tx_dropped", 2)))[0]["nic.tx_errors"]
    assert (f.severity, f.benign) == ("info", True)
    assert "normal" in f.explanation
    assert diagnosis_from_window(window_of(LinkHost({"veth0": VETH}),
                                           lambda h: h.bump("veth0", "tx_dropped", 2))).healthy


def test_tx_drops_during_a_flap_rank_below_the_flap():
    up_veth = dataclasses.replace(VETH, link=True)
    lh = LinkHost({"veth0": up_veth})

    def flap_with_traffic(h):
        h.bump("veth0", "carrier_changes", 6)
        h.bump("veth0", "carrier_down_count", 3)
        h.bump("veth0", "carrier_up_count", 3)
        h.bump("veth0", "tx_dropped", 900)
    by_id, ids, _ = evaluate(window_of(lh, flap_with_traffic))
    assert ids == ["nic.errors", "nic.tx_errors"]
    tx = by_id["nic.tx_errors"]
    assert (tx.drops, tx.severity) == (900, "warning")
    assert "see nic.errors" in tx.fixes[0]["text"]


def test_tx_drops_on_a_veth_with_link_suspect_the_peer_mtu():
    up_veth = dataclasses.replace(VETH, link=True)
    f = evaluate(window_of(LinkHost({"veth0": up_veth}), lambda h: h.bump("veth0", "tx_dropped", 1000)))[0][
        "nic.tx_errors"]
    assert f.severity == "critical" and "MTU" in f.fixes[0]["text"]


# --- cloud.allowance_exceeded ---------------------------------------------------------------

def test_allowance_names_each_allowance_with_measured_traffic():
    f = evaluate(window_of(LinkHost({"eth0": nic("ena")}), allowance))[0]["cloud.allowance_exceeded"]
    assert (f.drops, f.severity, f.layer) == (4350, "critical", "link")
    assert evidence(f, "ethtool.eth0.pps_allowance_exceeded") == 4200
    by_allowance = {s["allowance"]: s for s in f.subjects}
    assert set(by_allowance) == {"bw_in", "pps"}
    pps = by_allowance["pps"]
    assert (pps["exceeded"], pps["rate_per_s"], pps["driver"]) == (4200, 840.0, "ena")
    assert (pps["rx_pps"], pps["tx_pps"], pps["rx_mbit_s"]) == (80_000, 20_000, 800.0)
    texts = {x["allowance"]: x["text"] for x in f.fixes}
    assert "100000 packets/s" in texts["pps"] and "jumbo" in texts["pps"]
    assert "800.0 Mbit/s inbound" in texts["bw_in"] and "larger" in texts["bw_in"]
    assert "hypervisor" in f.explanation


def test_allowance_conntrack_and_linklocal_fixes():
    lh = LinkHost({"eth0": nic("ena")})

    def tracked(h):
        h.bump_stat("eth0", "conntrack_allowance_exceeded", 30)
        h.bump_stat("eth0", "linklocal_allowance_exceeded", 5)
        h.bump_stat("eth0", "conntrack_allowance_available", -98_000)  # a gauge: not a counter reset
    window = window_of(lh, tracked)
    f = evaluate(window)[0]["cloud.allowance_exceeded"]
    assert f.drops == 35
    kinds = {x["allowance"]: x for x in f.fixes}
    assert kinds["conntrack"]["kind"] == "config" and "now 432" in kinds["conntrack"]["text"]
    assert kinds["linklocal"]["kind"] == "app" and "1024 packets/s" in kinds["linklocal"]["text"]
    assert next(s for s in f.subjects if s["allowance"] == "conntrack")["conntrack_allowance_available"] == 432
    assert window.deltas.resets == []


@pytest.mark.parametrize("nics", [None, {"eth0": nic("ixgbe")}, {"eth0": nic("ena")}])
def test_allowance_silent_without_ena_or_without_ethtool(nics):
    _, ids, not_evaluated = evaluate(window_of(LinkHost(nics), lambda h: h.bump("eth0", "rx_packets", 10)))
    assert "cloud.allowance_exceeded" not in ids and "cloud.allowance_exceeded" not in not_evaluated


def test_allowance_not_evaluated_when_ethtool_failed():
    lh = LinkHost({"eth0": nic("ena")})
    lh.ethtool_status = "failed"
    _, ids, not_evaluated = evaluate(window_of(lh, lambda h: None))
    # nic.rx_missed/nic.errors read link and ethtool: link alone would be a partial count
    # (rules/coverage.py); nic.tx_errors reads link statistics only.
    assert not_evaluated == {"cloud.allowance_exceeded": "ethtool statistics failed",
                             "nic.rx_missed": "ethtool failed: SIOCETHTOOL: boom",
                             "nic.errors": "ethtool failed: SIOCETHTOOL: boom"}


def test_allowance_burst_below_one_per_second_is_a_warning():
    lh = LinkHost({"eth0": nic("ena")})
    f = evaluate(window_of(lh, lambda h: h.bump_stat("eth0", "bw_out_allowance_exceeded", 3)))[0][
        "cloud.allowance_exceeded"]
    assert (f.drops, f.severity) == (3, "warning")
    assert "outbound bandwidth" in f.fixes[0]["text"]
