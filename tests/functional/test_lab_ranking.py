"""Two simultaneous causes in one window: both reported, ranked by severity then drop rate.

The expected order is computed from what the window measured (severity and rate of each
finding), never written down: the lab only makes sure both causes really happen.
"""

from __future__ import annotations

import pytest

from dropdoc.lab import scenarios
from dropdoc.lab.catalog.ranking import UDP_PORT
from dropdoc.model import SEVERITY_ORDER

from .conftest import lab_namespaces, requires_root

pytestmark = [requires_root, pytest.mark.functional]

CAUSES = ("tcp.listen_overflow", "udp.rcvbuf_full")


@pytest.fixture(scope="module")
def two_causes():
    # Module-scoped (one lab run for both tests), so the function-scoped no_leftovers
    # fixture cannot wrap it: check this run's own namespaces instead (others may be
    # running labs next to us).
    result = scenarios.run("two-causes")
    assert not {result.server_ns, result.client_ns} & set(lab_namespaces()), "lab namespaces left behind"
    return result


def test_lab_left_nothing(two_causes, no_leftovers):
    assert two_causes.server_ns not in lab_namespaces()


def test_both_causes_are_reported_with_counters_behind_them(two_causes):
    diagnosis = two_causes.before.diagnosis
    found = {f.id: f for f in diagnosis.findings}
    assert set(CAUSES) <= set(found), [f.id for f in diagnosis.findings]
    deltas = diagnosis.counter_deltas
    listen, udp = found["tcp.listen_overflow"], found["udp.rcvbuf_full"]
    assert listen.drops == deltas["TcpExt.ListenOverflows"] > 0
    assert udp.drops == deltas["Udp.RcvbufErrors"] + (deltas.get("Udp6.RcvbufErrors") or 0) > 0
    # Each names its own socket and process: the two servers of the scenario.
    payments, collector = two_causes.server_pids
    assert (listen.subjects[0]["pid"], listen.subjects[0]["process"]) == (payments, "payments")
    assert udp.subjects[0]["socket"].endswith(f":{UDP_PORT}")
    assert (udp.subjects[0]["pid"], udp.subjects[0]["process"]) == (collector, "collector")
    # The UDP sink never read: (almost) every datagram that arrived was dropped.
    sent = two_causes.before.load["programs"][1]["sent"]
    assert 0.9 * sent <= udp.drops <= sent


def test_order_follows_severity_then_rate(two_causes):
    diagnosis = two_causes.before.diagnosis
    both = [f for f in diagnosis.findings if f.id in CAUSES]
    assert all(f.harmful for f in both)
    expected = sorted(both, key=lambda f: (SEVERITY_ORDER[f.severity], -f.rate_per_s))
    assert [f.id for f in both] == [f.id for f in expected]
    # And the whole list obeys the same rule (benign last), not only these two.
    keys = [(f.benign, SEVERITY_ORDER[f.severity], -f.rate_per_s) for f in diagnosis.findings]
    assert keys == sorted(keys)
    assert diagnosis.findings[0].id == expected[0].id
    assert diagnosis.exit_code() == 2
