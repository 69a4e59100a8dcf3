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


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _nobody_imports_dropdoc() -> bool:
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import dropdoc.cli"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="session", autouse=True)
def nobody_can_import_dropdoc():
    """The no-root tests run dropdoc as nobody. A checkout inside a directory other users
    cannot enter (root's home is mode 700 on Debian) hides the package and its dependencies
    from nobody: then mirror both into a world-readable temporary directory and put it on
    PYTHONPATH for the whole run (root's subprocesses import the same code from it)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None or _nobody_imports_dropdoc():
        yield
        return
    import dropdoc
    import sysconfig
    import tempfile

    mirror = tempfile.mkdtemp(prefix="dropdoc-nobody-")
    os.chmod(mirror, 0o755)
    skip = shutil.ignore_patterns("__pycache__", "__editable__*", "pip", "pip-*", "setuptools*",
                                  "_distutils_hack", "distutils-precedence.pth")
    shutil.copytree(os.path.dirname(dropdoc.__file__), os.path.join(mirror, "dropdoc"), ignore=skip)
    shutil.copytree(sysconfig.get_paths()["purelib"], os.path.join(mirror, "site"), ignore=skip)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([mirror, os.path.join(mirror, "site")])
    try:
        assert _nobody_imports_dropdoc(), f"nobody cannot import dropdoc even from {mirror}"
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
        shutil.rmtree(mirror, ignore_errors=True)


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
        command = [*NOBODY, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "120"})
