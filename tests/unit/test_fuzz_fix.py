"""Random and mutated input to everything dropdoc fix parses: the tools' output, the
journal, sysctl.d files and diagnosis JSON. Bad input may only raise ParseError (or, for a
diagnosis, another one-line DropdocError), never anything else."""

from __future__ import annotations

import json

from fuzzing import FIXTURES, FUZZ, REFUSED, json_values, parse_or_refuse, reassembled_lines
from hypothesis import given
from hypothesis import strategies as st

from dropdoc.errors import DropdocError, SourceUnavailable
from dropdoc.fix.changes import parse_ethtool_rings, parse_ip_link_json, parse_tc_qdisc_json
from dropdoc.fix.journal import parse_records
from dropdoc.fix.persist import parse_file, render
from dropdoc.fix.plan import make_plan
from dropdoc.model import SCHEMA

ETHTOOL = (FIXTURES / "fix" / "ethtool_g_eth0_virtio.txt").read_text()


@FUZZ
@given(st.text(max_size=400) | reassembled_lines(ETHTOOL))
def test_ethtool_rings_only_parse_error(text):
    rings = parse_or_refuse(parse_ethtool_rings, text)
    if rings is not REFUSED:
        assert set(rings) == {"max", "current"}
        assert all(v is None or isinstance(v, int) for section in rings.values() for v in section.values())


@FUZZ
@given(json_values.map(json.dumps) | st.text(max_size=100))
def test_tool_json_only_parse_error(text):
    parse_or_refuse(parse_tc_qdisc_json, text, also=(SourceUnavailable,))
    parse_or_refuse(parse_ip_link_json, text, "vfa", also=(SourceUnavailable,))


@FUZZ
@given(st.lists(json_values.map(json.dumps) | st.text(max_size=40), max_size=6).map("\n".join))
def test_journal_only_parse_error(text):
    records = parse_or_refuse(parse_records, text)
    if records is not REFUSED:
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
    plan = parse_or_refuse(lambda: make_plan(data, live=False), also=(DropdocError,))
    if plan is REFUSED:
        return
    for change in plan.changes:
        assert change.status in ("planned", "refused", "already", "unreadable")
        assert isinstance(change.why, str)
    json.dumps(plan.to_dict())
