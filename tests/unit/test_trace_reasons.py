"""Drop-reason tables from the tracepoint format file (captured 6.18, crafted 6.1/5.15, broken)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.trace import reasons

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"


def load(name: str) -> reasons.TracepointFormat:
    return reasons.parse_format((FIXTURES / name).read_text())


def test_captured_6_18_format():
    fmt = load("kfree_skb_format_6.18")
    assert fmt.name == "kfree_skb" and fmt.event_id == 2310
    assert fmt.has_rx_sk
    assert fmt.fields["reason"].offset == 36 and fmt.fields["reason"].size == 4
    assert fmt.fields["protocol"].size == 2
    assert fmt.fields["skbaddr"].type == "void * skbaddr"
    assert len(fmt.reasons) == 127
    assert fmt.reasons[3] == "NO_SOCKET"
    assert fmt.reasons[12] == "NETFILTER_DROP"
    assert fmt.reasons[40] == "TCP_LISTEN_OVERFLOW"
    assert 0 not in fmt.reasons and 1 not in fmt.reasons  # NOT_DROPPED_YET/CONSUMED never traced here


def test_crafted_6_1_has_reasons_with_other_numbers_and_no_rx_sk():
    fmt = load("kfree_skb_format_6.1")
    assert not fmt.has_rx_sk
    assert fmt.reasons[2] == "NO_SOCKET"  # 3 on 6.18: numbers are per kernel
    names = reasons.from_format(fmt)
    assert names.name(7) == "NETFILTER_DROP" and names.number("TCP_LISTEN_OVERFLOW") == 40


def test_crafted_5_15_has_no_reason_at_all():
    fmt = load("kfree_skb_format_5.15")
    assert fmt.reasons is None and "reason" not in fmt.fields
    assert reasons.from_format(fmt).name(None) == "(no reason: kernel < 5.17)"


@pytest.mark.parametrize("name", ["broken_format_truncated_table", "broken_format_no_print_fmt",
                                  "broken_format_bad_field"])
def test_broken_formats(name):
    with pytest.raises(ParseError):
        load(name)


def test_symbolic_table_edge_cases():
    assert reasons.parse_symbolic('"%s", __print_symbolic(REC->reason, { 0x10, "A(B)" }, { -1, "NEG" })') == \
        {16: "A(B)", -1: "NEG"}
    assert reasons.parse_symbolic('__print_symbolic(REC->reason, { 025, "LEADING_ZERO" })') == {25: "LEADING_ZERO"}
    with pytest.raises(ParseError):
        reasons.parse_symbolic('"%d", REC->reason')  # reason printed as a number: no table
    with pytest.raises(ParseError):
        reasons.parse_symbolic("__print_symbolic(REC->reason, )")


def test_names_for_unknown_and_subsystem_reasons():
    names = reasons.ReasonNames({3: "NO_SOCKET"}, {1: "MAC80211_UNUSABLE"}, "format")
    assert names.name(3) == "NO_SOCKET"
    assert names.name(999) == "UNKNOWN_999"
    assert names.name(1 << 16 | 4) == "MAC80211_UNUSABLE:4"
    assert names.name(5 << 16 | 1) == "SUBSYS_5:1"  # subsystem this kernel does not name
