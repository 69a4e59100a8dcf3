"""Random and mutated input to everything dropdoc fix parses: the tools' output, the
journal, sysctl.d files and diagnosis JSON. Bad input may only raise ParseError (or, for a
diagnosis, another one-line DropdocError), never anything else."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from dropdoc.errors import DropdocError, ParseError, SourceUnavailable
from dropdoc.fix.changes import parse_ethtool_rings, parse_ip_link_json, parse_tc_qdisc_json
from dropdoc.fix.journal import parse_records
from dropdoc.fix.persist import parse_file, render
from dropdoc.fix.plan import make_plan
from dropdoc.model import SCHEMA

FIXTURES = Path(__file__).parent.parent / "fixtures" / "fix"
FUZZ = settings(max_examples=200, deadline=None)
ETHTOOL = (FIXTURES / "ethtool_g_eth0_virtio.txt").read_text()


def mutations(seed: str):
    """Lines of a real capture dropped, duplicated, truncated or garbled."""
    lines = seed.splitlines(keepends=True)
    return st.lists(st.sampled_from(lines) | st.text(max_size=30), max_size=len(lines) + 4).map("".join) | \
        st.integers(0, len(seed)).map(lambda n: seed[:n])


@FUZZ
@given(st.text(max_size=400) | mutations(ETHTOOL))
def test_ethtool_rings_only_parse_error(text):
    try:
        rings = parse_ethtool_rings(text)
    except ParseError:
        return
    assert set(rings) == {"max", "current"}
    assert all(v is None or isinstance(v, int) for section in rings.values() for v in section.values())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4),
                           max_leaves=12)


@FUZZ
@given(json_values.map(json.dumps) | st.text(max_size=100))
def test_tool_json_only_parse_error(text):
    for parse in (parse_tc_qdisc_json, lambda t: parse_ip_link_json(t, "vfa")):
        try:
            parse(text)
        except (ParseError, SourceUnavailable):
            pass


@FUZZ
@given(st.lists(json_values.map(json.dumps) | st.text(max_size=40), max_size=6).map("\n".join))
def test_journal_only_parse_error(text):
    try:
        records = parse_records(text)
    except ParseError:
        return
    assert all(isinstance(r, dict) and "event" in r and "run" in r for r in records)


@FUZZ
@given(st.text(max_size=300))
def test_sysctl_d_files_round_trip(text):
    items = parse_file(text)
    again = parse_file(render(items))
    assert render(again) == render(items)


fix_records = st.fixed_dictionaries({"kind": st.sampled_from(["sysctl", "txqueuelen", "qdisc_limit", "ring",
                                                              "command", "app", "x"])},
                                    optional={"key": st.sampled_from(["net.core.somaxconn", "net.ipv4.tcp_mem",
                                                                      "net.core.rmem_max", "bogus"]),
                                              "current": json_values, "proposed": json_values,
                                              "interface": json_values, "handle": json_values,
                                              "qdisc": json_values, "device": json_values,
                                              "setting": st.sampled_from(["rx ring", "tx ring", "x"]),
                                              "text": json_values, "note": json_values, "why": json_values})
findings = st.fixed_dictionaries({"id": st.sampled_from(["tcp.listen_overflow", "udp.rcvbuf_full", "x.y"])},
                                 optional={"severity": st.sampled_from(["critical", "warning", "info", 3]),
                                           "benign": json_values, "drops": json_values,
                                           "rate_per_s": json_values, "explanation": json_values,
                                           "subjects": st.lists(st.dictionaries(st.sampled_from(
                                               ["socket", "pid", "process", "backlog", "drops", "cpu",
                                                "accept_queue", "full_samples", "samples", "interface"]),
                                               st.integers(-2, 5000) | json_values, max_size=6), max_size=3)
                                           | json_values,
                                           "evidence": json_values,
                                           "fixes": st.lists(fix_records, max_size=4) | json_values})


@FUZZ
@given(st.fixed_dictionaries({"schema": st.just(SCHEMA), "findings": st.lists(findings, max_size=3)},
                             optional={"host": json_values, "window": json_values}) | json_values)
def test_any_diagnosis_json_plans_or_raises_one_error(data):
    try:
        plan = make_plan(data, live=False)
    except DropdocError:
        return
    for change in plan.changes:
        assert change.status in ("planned", "refused", "already", "unreadable")
        assert isinstance(change.why, str)
    json.dumps(plan.to_dict())
