"""The link layer on the real kernel: driver statistics and ring sizes read through SIOCETHTOOL
inside a lab namespace and on the host, kept by bundles, and the two link faults a veth pair
can reproduce (a peer that is down, a flapping link) found as the top finding."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from dropdoc.bundle import read_bundle, write_bundle
from dropdoc.lab import scenarios
from dropdoc.lab.topology import LabNet
from dropdoc.snapshot import take_snapshot
from dropdoc.window import measure

from .conftest import requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]
HAS_ETHTOOL = shutil.which("ethtool") is not None


def ethtool_program(ns: str | None, *args: str) -> str:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run([*prefix, "ethtool", *args], capture_output=True, text=True, timeout=10).stdout


def printed_stat_names(text: str) -> list[str]:
    return re.findall(r"^\s+(.+): \d+$", text, flags=re.M)


@pytest.fixture
def lab(no_leftovers):
    with LabNet() as net:
        yield net


def test_veth_statistics_read_from_inside_its_namespace(lab):
    data = take_snapshot(lab.server_ns, names=["ethtool"]).data("ethtool")
    assert set(data.interfaces) == {lab.server_if}  # the namespace's own devices only
    assert data.skipped == {"lo": "no ethtool support (EOPNOTSUPP)"}
    veth = data.interfaces[lab.server_if]
    assert veth.driver == "veth" and veth.link is True
    assert veth.ring is None  # veth has no ring parameters: unknown, not 0
    assert veth.channels is not None and 1 <= veth.channels.rx <= veth.channels.max_rx
    assert "peer_ifindex" in veth.stats and "rx_queue_0_xdp_drops" in veth.stats
    if HAS_ETHTOOL:
        assert list(veth.stats) == printed_stat_names(ethtool_program(lab.server_ns, "-S", lab.server_if))
    host = take_snapshot(None, names=["ethtool"]).data("ethtool")
    assert lab.server_if not in host.interfaces and lab.client_if not in host.interfaces


def test_host_interfaces_statistics_and_rings():
    snap = take_snapshot(None, names=["ethtool", "link_stats"])
    data = snap.data("ethtool")
    assert snap.results["ethtool"].ok, snap.results["ethtool"].error
    assert "lo" in data.skipped and "lo" not in data.interfaces
    for ifname, nic in data.interfaces.items():
        assert nic.driver, ifname
        if nic.ring is not None:
            assert 0 < nic.ring.rx <= nic.ring.rx_max, ifname
            if HAS_ETHTOOL:
                printed = ethtool_program(None, "-g", ifname)
                assert re.findall(r"^RX:\s+(\d+)", printed, re.M) == [str(nic.ring.rx_max), str(nic.ring.rx)]
        if HAS_ETHTOOL and nic.stats:
            assert list(nic.stats) == printed_stat_names(ethtool_program(None, "-S", ifname))
    # link flaps come with the link statistics of every device
    assert all("carrier_changes" in table for table in snap.data("link_stats").values())


def test_bundle_round_trip_keeps_driver_statistics(lab, tmp_path):
    path = str(tmp_path / "link.tar.gz")
    window = measure(lab.client_ns, 0.3, sample_interval=0.1, record=True)
    write_bundle(window, path)
    replayed = read_bundle(path)
    for live, again in ((window.before, replayed.before), (window.after, replayed.after)):
        assert again.results["ethtool"].ok
        assert again.data("ethtool") == live.data("ethtool")
        assert again.source_counters("ethtool") == live.source_counters("ethtool")
    assert lab.client_if in replayed.after.data("ethtool").interfaces
    assert f"link.{lab.client_if}.carrier_changes" in replayed.deltas.values


def test_collect_without_root_reads_driver_statistics():
    proc = run_cli("collect", user="nobody")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["coverage"]["ethtool"] == "ok"
    assert "lo" in document["sources"]["ethtool"]["skipped"]


def test_peer_down_drops_every_datagram_on_transmit(no_leftovers):
    result = scenarios.run("veth-peer-down")
    diagnosis = result.before.diagnosis
    top = diagnosis.findings[0]
    assert top.id == "nic.tx_errors"
    assert top.severity == "critical" and not top.benign
    client_if = next(s["interface"] for s in top.subjects)
    assert client_if.startswith("dd") and client_if.endswith("c")
    assert top.drops == diagnosis.counter_deltas[f"link.{client_if}.tx_dropped"]
    load = result.before.load
    assert load["errors"] == 0  # the sender never learned about it
    assert load["sent"] <= top.drops <= load["sent"] + 10  # all of them (plus stray IPv6 packets)
    subject = top.subjects[0]
    assert (subject["driver"], subject["link_now"]) == ("veth", "down")
    assert "no link" in top.fixes[0]["text"]
    assert diagnosis.exit_code() == 2


def test_link_flap_is_found_as_carrier_changes(no_leftovers):
    result = scenarios.run("link-flap")
    diagnosis = result.before.diagnosis
    assert result.before.load["flaps"] == 3
    top = diagnosis.findings[0]
    assert top.id == "nic.errors" and top.severity == "critical"
    subject = top.subjects[0]
    assert (subject["carrier_changes"], subject["went_down"], subject["came_up"]) == (6, 3, 3)
    assert subject["link_now"] == "up"  # the flapper always leaves the link up
    assert top.drops == 0  # nothing counted the frames lost while down
    others = [f for f in diagnosis.findings[1:] if f.harmful]
    assert all(f.severity == "warning" for f in others), [(f.id, f.severity) for f in others]
