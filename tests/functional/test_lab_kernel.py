"""Kernel-layer lab scenarios on the real kernel: a qdisc dropping on the sender, the
per-CPU backlog overflowing, the softirq running out of budget. Each must be the top
finding, with the numbers the kernel counted, and leave nothing behind (namespaces,
host sysctls)."""

from __future__ import annotations

import re

import pytest

from dropdoc.lab import scenarios
from dropdoc.lab.catalog import kernel as catalog

from .conftest import requires_root

pytestmark = [requires_root, pytest.mark.functional]


def host_value(key: str) -> int:
    with open("/proc/sys/" + key.replace(".", "/")) as handle:
        return int(handle.read())


def tag_of(result) -> str:
    return result.client_ns[len("ddlab-"):-len("-cli")]


def softnet(diagnosis, counter: str) -> dict[int, int]:
    return {int(name.split(".")[1][3:]): value for name, value in diagnosis.counter_deltas.items()
            if name.startswith("softnet.cpu") and name.endswith(f".{counter}") and value}


def test_qdisc_drop_on_the_sender(no_leftovers):
    result = scenarios.run("qdisc-drop")
    diagnosis = result.before.diagnosis
    assert diagnosis.netns == result.client_ns  # measured where the qdisc is
    top = diagnosis.findings[0]
    assert top.id == "qdisc.drop"
    assert top.severity == "critical" and not top.benign
    interface = f"dd{tag_of(result)}c"
    counted = diagnosis.counter_deltas[f"qdisc.{interface}.tbf.1:/root.drops"]
    assert top.drops == counted > 500  # most of the 2000-datagram burst
    assert result.before.load["sent"] == 2000 and counted < 2000
    (subject,) = top.subjects
    assert (subject["interface"], subject["qdisc"], subject["handle"], subject["parent"]) == (
        interface, "tbf", "1:", "root")
    assert (subject["limit"], subject["limit_unit"], subject["rate"]) == (20480, "bytes", "100mbit")
    assert subject["drops"] == counted and subject["overlimits"] > 0
    assert subject["sent_packets"] + counted <= 2000 + 10  # plus a few IPv6/ARP frames
    assert "the shaping rate is the cap" in top.explanation and "100mbit" in top.explanation
    assert "ENOBUFS" in top.explanation
    # the fix raises the queue limit, derived from what was dropped
    limits = [int(m.group(1)) for fix in top.fixes if (m := re.search(r" limit (\d+)", fix.get("text", "")))]
    assert limits and max(limits) >= 20480 + counted * 1000
    assert all(result.client_ns in fix["text"] for fix in top.fixes)


def test_cpu_backlog_drop_is_softnet_dropped(no_leftovers):
    before = host_value("net.core.netdev_max_backlog")
    result = scenarios.run("cpu-backlog")
    assert host_value("net.core.netdev_max_backlog") == before  # restored on teardown
    diagnosis = result.before.diagnosis
    top = diagnosis.findings[0]
    assert top.id == "cpu.backlog_drop"
    assert top.severity == "critical"
    dropped = softnet(diagnosis, "dropped")
    assert top.drops == sum(dropped.values()) > 100  # softnet_stat column 2 really moved
    assert [s["cpu"] for s in top.subjects] == sorted(dropped)
    last_cpu = max(dropped)
    assert dropped[last_cpu] >= 0.9 * top.drops  # RPS put the backlog on one CPU
    assert "host-wide" in top.explanation and result.server_ns in top.explanation
    # the sink's 64 MiB buffer held the burst: the socket is not where packets died
    assert not diagnosis.counter_deltas.get("Udp.RcvbufErrors")
    # netdev_max_backlog is global: not readable inside the namespace, the fix says where
    assert any("net.core.netdev_max_backlog" in fix.get("text", "") or fix.get("key") == "net.core.netdev_max_backlog"
               for fix in top.fixes)
    assert catalog.BACKLOG == 1


def test_time_squeeze_is_a_warning_without_drops(no_leftovers):
    before = host_value("net.core.netdev_budget")
    result = scenarios.run("time-squeeze")
    assert host_value("net.core.netdev_budget") == before  # restored on teardown
    diagnosis = result.before.diagnosis
    top = diagnosis.findings[0]
    assert top.id == "cpu.time_squeeze"
    assert top.severity == "warning" and top.drops == 0
    squeezed = softnet(diagnosis, "time_squeeze")
    worst = max(squeezed.values())
    assert worst / diagnosis.seconds >= 10  # sustained on one CPU
    assert {s["cpu"]: s["time_squeeze"] for s in top.subjects} == squeezed
    assert f"{sum(squeezed.values())} times" in top.summary
    keys = " ".join(fix.get("text", "") + str(fix.get("key")) for fix in top.fixes)
    assert "net.core.netdev_budget" in keys and "net.core.netdev_budget_usecs" in keys
    assert not any(f.harmful for f in diagnosis.findings if f.id in ("cpu.backlog_drop", "udp.rcvbuf_full"))
