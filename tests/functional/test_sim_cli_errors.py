"""`dropdoc sim --from-host` as an operator without root, and against a namespace that is
not there: a calibration from what can be read, or one line - never a traceback."""

from __future__ import annotations

import json

import pytest

from .conftest import requires_root, run_cli

pytestmark = [pytest.mark.functional, requires_root]


def test_from_host_as_nobody_calibrates_from_what_it_can_read(no_leftovers):
    result = run_cli("sim", "--from-host", "--measure-seconds", "0.3", "--seconds", "0.2", "--format", "json",
                     user="nobody")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    calibration = json.loads(result.stdout)["calibration"]
    assert "somaxconn" in calibration["measured"]          # sysctls are world-readable
    assert calibration["params"]["cpus"] >= 1


@pytest.mark.parametrize("user", [None, "nobody"])
def test_from_host_in_a_missing_namespace_is_one_line(user, no_leftovers):
    result = run_cli("sim", "--from-host", "--netns", "ddlab-no-such-ns", "--measure-seconds", "0.2", user=user)
    assert result.returncode == 3
    assert result.stderr.startswith("dropdoc: ") and len(result.stderr.strip().splitlines()) == 1
    assert "ddlab-no-such-ns" in result.stderr and result.stdout == ""
