"""Reading another network namespace in-process: per-netns sysctls, counters, netlink."""

from __future__ import annotations

import json

import pytest

from dropdoc.fix.sysctl import UnsafeChange, write_sysctl
from dropdoc.lab.topology import LabNet
from dropdoc.snapshot import take_snapshot

from .conftest import requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]


@pytest.fixture
def lab(no_leftovers):
    with LabNet() as net:
        yield net


def test_snapshot_reads_the_namespace_not_the_host(lab):
    write_sysctl("net.core.somaxconn", 23, lab.server_ns)
    inside = take_snapshot(lab.server_ns)
    host = take_snapshot(None)
    assert inside.data("sysctls")["net.core.somaxconn"] == 23
    assert host.data("sysctls")["net.core.somaxconn"] != 23
    # /sys shows the host inside a netns: link stats must come from rtnetlink there.
    assert set(inside.data("link_stats")) == {"lo", f"dd{lab.tag}s"}
    assert set(inside.data("netdev")) == {"lo", f"dd{lab.tag}s"}
    assert f"dd{lab.tag}s" not in host.data("netdev")


def test_collect_cli_in_namespace(lab):
    proc = run_cli("collect", "--netns", lab.server_ns)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["host"]["netns"] == lab.server_ns
    assert all(status == "ok" for status in document["coverage"].values()), document["coverage"]


def test_global_sysctl_refused_for_a_namespace(lab):
    with pytest.raises(UnsafeChange, match="global"):
        write_sysctl("net.core.netdev_max_backlog", 5000, lab.server_ns)
    with pytest.raises(UnsafeChange, match="safe range"):
        write_sysctl("net.core.somaxconn", 10**9, lab.server_ns)


def test_host_sysctl_changed_by_a_scenario_is_restored(no_leftovers):
    path = "/proc/sys/net/core/netdev_max_backlog"
    original = int(open(path).read())
    with pytest.raises(RuntimeError):
        with LabNet() as net:
            net.set_host_sysctl("net.core.netdev_max_backlog", original + 7)
            assert int(open(path).read()) == original + 7
            raise RuntimeError("scenario failed midway")
    assert int(open(path).read()) == original


def test_global_sysctls_are_read_from_the_host_for_a_namespace(lab):
    host_value = int(open("/proc/sys/net/core/netdev_max_backlog").read())
    inside = take_snapshot(lab.server_ns)
    # /proc/sys/net/core/netdev_max_backlog does not exist inside a child namespace
    assert inside.data("sysctls")["net.core.netdev_max_backlog"] == host_value
