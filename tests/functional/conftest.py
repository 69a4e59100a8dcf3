"""Functional tests run the real kernel: root, network namespaces, real traffic between
namespaces the tests create. Every test checks that nothing is left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

DROPDOC = [sys.executable, "-m", "dropdoc.cli"]

requires_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                   reason="needs root and iproute2 (network namespaces)")


# Namespaces made by this test run carry this prefix (LabNet reads it from the environment,
# also in the dropdoc subprocesses the tests start), so parallel runs leave each other alone.
RUN_PREFIX = f"{os.getpid() % 0xfff:03x}"
os.environ["DROPDOC_LAB_TAG_PREFIX"] = RUN_PREFIX


def lab_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"ddlab-{RUN_PREFIX}")]


@pytest.fixture
def no_leftovers():
    """Fail the test if it leaves lab namespaces behind (and remove them anyway)."""
    before = set(lab_namespaces())
    yield
    left = set(lab_namespaces()) - before
    for name in left:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert not left, f"namespaces left behind: {sorted(left)}"


def run_cli(*args: str, user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [*DROPDOC, *args]
    if user == "nobody":
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "120"})
