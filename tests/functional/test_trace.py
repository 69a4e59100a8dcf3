"""The drop tracer on the real kernel: drops of known reasons made in lab namespaces,
counts checked against the kernel's own counters (nft rule counter, Udp NoPorts),
netns filtering, the tracefs fallback, and cleanup on every way a trace can end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from dropdoc import netns as netns_mod
from dropdoc.lab.topology import SERVER_ADDRESS, LabNet
from dropdoc.sources import snmp
from dropdoc.trace import Tracer, bpf, trace, tracefs

from .conftest import DROPDOC, requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]

NFT_PORT, CLOSED_PORT = 9100, 9200
NFT_RULES = f"""table inet ddtrace {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {NFT_PORT} counter drop
  }}
}}
"""


@pytest.fixture
def lab(no_leftovers):
    with LabNet() as net:
        net.run(net.server_ns, "nft", "-f", "-", stdin=NFT_RULES)
        yield net


def nft_counter(lab: LabNet) -> int:
    ruleset = json.loads(lab.run(lab.server_ns, "nft", "-j", "list", "table", "inet", "ddtrace"))
    for item in ruleset["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    return expr["counter"]["packets"]
    raise AssertionError("counter rule not found")


def counters(ns: str) -> dict[str, int | None]:
    with netns_mod.entered(ns):
        with open("/proc/net/snmp") as s, open("/proc/net/netstat") as n:
            return {**snmp.flatten(snmp.parse(s.read())), **snmp.flatten(snmp.parse(n.read()))}


def udp_burst(lab: LabNet, port: int, packets: int, rate: int = 0, ns: str | None = None) -> dict:
    process = lab.spawn(ns or lab.client_ns, "dropdoc.lab.udp_burst", "--target", f"{SERVER_ADDRESS}:{port}",
                        "--packets", str(packets), "--rate", str(rate), "--max-seconds", "4")
    out, err = process.communicate(timeout=15)
    lab.processes.remove(process)
    assert process.returncode == 0, err
    return json.loads(out)


def test_nft_drops_match_the_rule_counter_exactly(lab):
    before = nft_counter(lab)
    with Tracer(netns=lab.server_ns, by=("reason", "location", "proto", "port", "netns")) as tracer:
        tracer.start()
        sent = udp_burst(lab, NFT_PORT, 20_000)
        result = tracer.stop()
    dropped = nft_counter(lab) - before
    assert result.backend == "bpf" and result.lost == 0
    assert dropped == sent["sent"] > 10_000
    traced = result.count("NETFILTER_DROP", port=NFT_PORT, netns=lab.server_ns, proto="ipv4", l4="udp")
    assert traced == dropped
    locations = {d.location for d in result.drops if d.reason == "NETFILTER_DROP"}
    assert all(loc.split("+")[0] in ("nft_do_chain", "nf_hook_slow") for loc in locations), locations


def test_udp_to_a_closed_port_is_no_socket_and_matches_noports(lab):
    before = counters(lab.server_ns)
    with Tracer(netns=lab.server_ns, by=("reason", "location", "port")) as tracer:
        tracer.start()
        sent = udp_burst(lab, CLOSED_PORT, 300, rate=3000)
        time.sleep(0.1)
        result = tracer.stop()
    no_ports = counters(lab.server_ns)["Udp.NoPorts"] - before["Udp.NoPorts"]
    assert no_ports > 0
    assert result.count("NO_SOCKET", port=CLOSED_PORT) == no_ports
    assert {d.location.split("+")[0] for d in result.drops if d.reason == "NO_SOCKET"} == {"__udp4_lib_rcv"}
    assert sent["sent"] + sent["errors"] == 300  # ICMP unreachables make some sends fail


def test_netns_filter_counts_only_that_namespace(lab, no_leftovers):
    with LabNet() as other:
        with Tracer(netns=lab.server_ns, by=("reason", "netns")) as tracer:
            tracer.start()
            udp_burst(other, NFT_PORT, 500, rate=5000)  # other lab: closed port -> NO_SOCKET there
            mine = udp_burst(lab, NFT_PORT, 200, rate=5000)
            result = tracer.stop()
    assert {d.netns for d in result.drops} <= {lab.server_ns}
    assert result.count("NETFILTER_DROP") == mine["sent"] == 200
    assert result.count("NO_SOCKET") == 0


def test_listen_overflow_is_seen_as_a_pointer(lab):
    server = lab.spawn(lab.server_ns, "dropdoc.lab.server", "--port", "8080", "--backlog", "8",
                       "--accept-rate", "20", "--max-seconds", "10")
    assert server.stdout.readline().strip() == "ready"
    before = counters(lab.server_ns)
    with Tracer(netns=lab.server_ns, by=("reason", "location")) as tracer:
        tracer.start()
        client = lab.spawn(lab.client_ns, "dropdoc.lab.client", "--target", f"{SERVER_ADDRESS}:8080",
                           "--connections", "200", "--rate", "400", "--max-seconds", "2")
        client.communicate(timeout=15)
        lab.processes.remove(client)
        result = tracer.stop()
    overflows = counters(lab.server_ns)["TcpExt.ListenOverflows"] - before["TcpExt.ListenOverflows"]
    seen = result.count("TCP_LISTEN_OVERFLOW")
    # DESIGN "kernel facts": only a fraction of listen drops carry this reason
    assert overflows > 0 and 0 < seen <= overflows


def test_tracefs_fallback_accounts_for_every_drop_and_cleans_up(lab):
    mounts_before = open("/proc/self/mounts").read()
    before = nft_counter(lab)
    with Tracer(by=("reason", "location"), backend="tracefs") as tracer:
        tracer.start()
        instance = tracer.backend.instance
        assert os.path.isdir(instance)
        root = tracer.backend.fs.root
        with open(os.path.join(instance, "events/skb/kfree_skb/enable")) as mine, \
                open(os.path.join(root, "events/skb/kfree_skb/enable")) as host_wide:
            assert (mine.read().strip(), host_wide.read().strip()) == ("1", "0")  # own instance only
        udp_burst(lab, NFT_PORT, 3000, rate=20_000)
        time.sleep(0.3)
        result = tracer.stop()
    dropped = nft_counter(lab) - before
    assert result.backend == "tracefs" and result.lost is not None
    traced = result.count("NETFILTER_DROP")
    # host-wide (no netns in the event): never fewer than the rule dropped, unless lost
    assert traced + result.lost >= dropped > 0
    assert not os.path.exists(instance)
    assert open("/proc/self/mounts").read().count(" tracefs ") == mounts_before.count(" tracefs ")


def test_tracefs_buffer_overrun_is_reported_not_hidden(lab):
    from dropdoc.trace import tracefs as tracefs_mod

    old = tracefs_mod.BUFFER_KB
    tracefs_mod.BUFFER_KB = 4  # a tiny ring: the reader cannot keep up with a flood
    try:
        before = nft_counter(lab)
        with Tracer(by=("reason",), backend="tracefs") as tracer:
            tracer.start()
            udp_burst(lab, NFT_PORT, 30_000)
            result = tracer.stop()
    finally:
        tracefs_mod.BUFFER_KB = old
    dropped = nft_counter(lab) - before
    # Never a silent undercount: what the reader missed is in `lost`. (Whether a 4 KiB ring
    # overflows depends on how busy the machine is, so loss itself is not asserted.)
    assert result.count("NETFILTER_DROP") + result.lost >= dropped
    if result.count("NETFILTER_DROP") < dropped:
        assert result.lost > 0


def test_exception_inside_the_tracer_releases_everything():
    with pytest.raises(RuntimeError), Tracer(by=("reason", "netns")) as tracer:
        ids = dict(tracer.backend.object_ids)
        fd = tracer.backend.prog_fd
        raise RuntimeError("boom")
    assert not os.path.exists(f"/proc/self/fd/{fd}") or "bpf" not in os.readlink(f"/proc/self/fd/{fd}")
    assert_gone(ids)
    with pytest.raises(RuntimeError), Tracer(backend="tracefs") as tracer:
        instance = tracer.backend.instance
        raise RuntimeError("boom")
    assert not os.path.exists(instance)


def assert_gone(ids: dict[str, int], timeout: float = 3.0) -> None:
    """BPF objects are freed after an RCU grace period: poll briefly."""
    assert ids
    deadline = time.monotonic() + timeout
    alive = ids
    while time.monotonic() < deadline:
        alive = {k: v for k, v in ids.items() if bpf.object_exists(k.split(":")[0], v)}
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"BPF objects still alive: {alive}")


def bpf_ids_of(pid: int) -> dict[str, int]:
    """Program and map ids held by a process (its fdinfo), as `bpftool prog show` would."""
    ids = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key in ("prog_id", "map_id"):
                ids[f"{key[:-3]}:{fd}"] = int(value)
    return ids


def start_cli(*args: str) -> subprocess.Popen:
    process = subprocess.Popen([*DROPDOC, "trace", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    line = process.stderr.readline()
    assert "counting drops" in line, line + process.stderr.read()
    return process


@pytest.mark.parametrize("how", ["sigint", "sigterm", "sigkill", "normal"])
def test_cli_cleanup_on_every_exit(how):
    process = start_cli("--duration", "1" if how == "normal" else "30", "--format", "json",
                        "--by", "reason,netns")
    ids = bpf_ids_of(process.pid)
    assert any(k.startswith("prog") for k in ids) and any(k.startswith("map") for k in ids)
    if how != "normal":
        process.send_signal({"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}[how])
    out, err = process.communicate(timeout=15)
    assert_gone(ids)
    if how == "sigkill":
        assert process.returncode == -signal.SIGKILL
        return
    assert process.returncode == 0, err
    document = json.loads(out)
    assert document["backend"] == "bpf" and document["lost"] == 0
    assert document["interrupted"] is (how != "normal")
    assert "Traceback" not in err


def test_cli_tracefs_sigterm_and_stale_instance_after_sigkill():
    fs = tracefs.Tracefs.open()
    try:
        instances = fs.path("instances")
        process = start_cli("--backend", "tracefs", "--duration", "30", "--format", "json")
        mine = [n for n in os.listdir(instances) if n.startswith(f"dropdoc-{process.pid}-")]
        assert len(mine) == 1
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
        assert json.loads(out)["backend"] == "tracefs"
        assert not os.path.exists(os.path.join(instances, mine[0]))
        killed = start_cli("--backend", "tracefs", "--duration", "30", "--format", "json")
        stale = [n for n in os.listdir(instances) if n.startswith(f"dropdoc-{killed.pid}-")]
        killed.kill()
        killed.communicate(timeout=15)
        assert os.path.exists(os.path.join(instances, stale[0]))  # SIGKILL skips every cleanup...
        with open(os.path.join(instances, stale[0], "events/skb/kfree_skb/enable")) as handle:
            assert handle.read().strip() == "1"
        result = trace(duration=0.2, backend="tracefs")  # ...the next run removes it
        assert not os.path.exists(os.path.join(instances, stale[0]))
        assert any(stale[0] in w for w in result.warnings)
    finally:
        fs.close()


def test_cli_without_root_is_a_coverage_gap_not_a_traceback():
    proc = run_cli("trace", "--duration", "0.5", "--format", "json", user="nobody")
    assert proc.returncode == 3
    document = json.loads(proc.stdout)
    assert document["backend"] == "unavailable" and document["status"] == "needs-privilege"
    assert "root" in document["error"]
    assert "Traceback" not in proc.stderr


def test_cli_text_output_and_bad_arguments(lab):
    proc = run_cli("trace", "--netns", lab.server_ns, "--duration", "0.5", "--by", "reason,proto")
    assert proc.returncode == 0, proc.stderr
    assert "backend bpf" in proc.stdout and "events lost by the tracer: 0" in proc.stdout
    bad = run_cli("trace", "--by", "reason,colour")
    assert bad.returncode == 2 and "colour" in bad.stderr
    missing = run_cli("trace", "--netns", "ddlab-does-not-exist", "--duration", "0.5")
    assert missing.returncode == 3 and "no network namespace" in missing.stderr


def test_argument_count_is_probed_by_attach_einval():
    """Reading a 5th tracepoint argument (offset 32) must fail at attach with EINVAL:
    that is what the loader relies on to find 2/3/4-argument kernels."""
    import errno

    from dropdoc.trace import insn as I

    for nargs, ok in ((4, True), (5, False)):
        prog = [I.ldx(I.DW, I.R0, I.R1, 8 * (nargs - 1)), I.mov_imm(I.R0, 0), I.exit_()]
        fd = bpf.load_program(prog, "dropdoc_probe")
        try:
            if ok:
                os.close(bpf.raw_tracepoint_open("kfree_skb", fd))
            else:
                with pytest.raises(bpf.BpfError) as info:
                    bpf.raw_tracepoint_open("kfree_skb", fd)
                assert info.value.errno == errno.EINVAL
        finally:
            os.close(fd)


def test_verifier_rejection_comes_with_its_log():
    from dropdoc.trace import insn as I

    with pytest.raises(bpf.BpfError) as info:
        bpf.load_program([I.exit_()], "dropdoc_bad")  # returns a register never set
    assert info.value.log_line() == "R0 !read_ok"
    assert "processed 1 insns" in info.value.log


def test_window_api_for_diagnose(lab):
    """What `dropdoc diagnose` will call around its measurement window."""
    from dropdoc.trace import finish_window, start_window

    before = nft_counter(lab)
    window = start_window(lab.server_ns)
    udp_burst(lab, NFT_PORT, 1000, rate=10_000)
    udp_burst(lab, CLOSED_PORT, 50, rate=1000)
    result = finish_window(window)
    assert result.status == "ok" and result.seconds > 0
    per_reason = result.by_reason()
    assert per_reason["NETFILTER_DROP"] == nft_counter(lab) - before == 1000
    assert per_reason["NO_SOCKET"] > 0
    assert window.backend.prog_fd == -1 and window.backend.counts.fd == -1  # released
