"""Bundles: a window recorded during a real fault gives the same diagnosis when replayed."""

from __future__ import annotations

import json
import tarfile

import pytest

from dropdoc.bundle import read_bundle, write_bundle
from dropdoc.diagnose import diagnosis_from_window
from dropdoc.fix.sysctl import write_sysctl
from dropdoc.lab import scenarios
from dropdoc.lab.topology import LabNet
from dropdoc.window import measure

from .conftest import requires_root, run_cli

pytestmark = [requires_root, pytest.mark.functional]


def test_bundle_of_listen_overflow_replays_to_the_same_findings(tmp_path, no_leftovers):
    scenario = scenarios.get("listen-overflow")
    path = str(tmp_path / "bundle.tar.gz")
    with LabNet() as lab:
        for key, value in scenario.server_sysctls.items():
            write_sysctl(key, value, lab.server_ns)
        server = scenarios._start(lab, scenario.servers[0])
        loads = []
        window = measure(lab.server_ns, scenario.window, record=True,
                         on_start=lambda: loads.extend(scenarios._start(lab, p) for p in scenario.loads))
        for process in loads:
            process.wait(timeout=30)
            lab.stop(process)
        lab.stop(server)
    live = diagnosis_from_window(window).to_dict()
    write_bundle(window, path, live)
    replayed = diagnosis_from_window(read_bundle(path)).to_dict()
    assert live["findings"][0]["id"] == "tcp.listen_overflow"
    assert live["findings"][0]["subjects"][0]["process"] == "payments"
    assert replayed == live
    with tarfile.open(path) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert "before/proc/net/netstat" in names and "after/proc/net/netstat" in names
    assert manifest["after"]["kernel"] and manifest["distro"]


def test_cli_collect_bundle_then_diagnose_from(tmp_path):
    path = str(tmp_path / "b.tar.gz")
    proc = run_cli("collect", "-o", path, "--duration", "0.5")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("diagnose", "--from", path, "--format", "json")
    assert proc.returncode in (0, 1, 2), proc.stderr
    document = json.loads(proc.stdout)
    # every source recorded on the host replays (a bundle of the host namespace has no
    # host_sysctls entry: the sysctls source must not need one)
    failing = {name: status for name, status in document["coverage"].items()
               if status != "ok" and name not in ("trace", "listener_sampling")}
    assert failing == {}, document["coverage_errors"]
    assert 0.4 < document["window"]["seconds"] < 2


@pytest.mark.parametrize("content", [b"", b"not a tarball", b"\x1f\x8b\x08garbage"])
def test_diagnose_from_garbage_is_one_line(tmp_path, content):
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(content)
    proc = run_cli("diagnose", "--from", str(path))
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
