"""sources/nftables.py on dumps captured by tests/fixtures/nftables/capture.py, plus crafted
and broken replies. The capture's ruleset and traffic are in capture.json; `nft -a list
ruleset` of the same instant is ruleset.txt, which the parser must agree with."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from dropdoc.errors import ParseError, SourceUnavailable
from dropdoc.sources import nftables
from dropdoc.sources.base import ReadContext, read_source
from dropdoc.sources.nftables import (
    NETLINK_NETFILTER,
    NFNL_SUBSYS_NFTABLES,
    NFT_MSG_GETCHAIN,
    NFT_MSG_GETRULE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nftables"
RULES = (FIXTURES / "rules.bin").read_bytes()
CHAINS = (FIXTURES / "chains.bin").read_bytes()
LISTING = (FIXTURES / "ruleset.txt").read_text()
CAPTURE = json.loads((FIXTURES / "capture.json").read_text())
SENT = {(proto, port): count for proto, port, count in CAPTURE["traffic"]}


@pytest.fixture(scope="module")
def ruleset():
    return nftables.parse(RULES, CHAINS)


def by_handle(ruleset, family, table, handle):
    return next(r for r in ruleset.rules if (r.family, r.table, r.handle) == (family, table, handle))


# --- helpers to craft replies ---------------------------------------------------------------

def nla(attr_type: int, payload: bytes, nested: bool = False) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type | (0x8000 if nested else 0)) + payload + b"\0" * (-length % 4)


def nlmsg(msg_type: int, body: bytes, flags: int = 2) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, msg_type, flags, 1, 0) + body + b"\0" * (-length % 4)


def string(text: str) -> bytes:
    return text.encode() + b"\0"


def expr(name: str, *attrs: bytes) -> bytes:
    return nla(1, nla(1, string(name)) + (nla(2, b"".join(attrs), nested=True) if attrs else b""), nested=True)


def verdict(code: int) -> bytes:
    return expr("immediate", nla(1, struct.pack("!I", 0)),
                nla(2, nla(2, nla(1, struct.pack("!i", code)), nested=True), nested=True))


def counter(packets: int, nbytes: int) -> bytes:
    return expr("counter", nla(1, struct.pack("!Q", nbytes)), nla(2, struct.pack("!Q", packets)))


def rule_msg(table: str, chain: str, handle: int | None, exprs: list[bytes], family: int = 1,
             userdata: bytes | None = None) -> bytes:
    body = struct.pack("=BB", family, 0) + struct.pack("!H", 42)
    body += nla(1, string(table)) + nla(2, string(chain))
    if handle is not None:
        body += nla(3, struct.pack("!Q", handle))
    body += nla(4, b"".join(exprs), nested=True)
    if userdata is not None:
        body += nla(7, userdata)
    return nlmsg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, body)


DONE = nlmsg(3, struct.pack("=i", 0))


# --- the captured ruleset -------------------------------------------------------------------

def test_real_dump_lists_every_rule_of_the_nft_listing(ruleset):
    listed = []
    table = None
    for line in LISTING.splitlines():
        match = re.match(r"table (\w+) (\w+) \{", line)
        if match:
            table = match.groups()
        match = re.search(r"# handle (\d+)$", line)
        if match and not line.strip().startswith(("table", "chain", "set")):
            listed.append((*table, int(match.group(1))))
    assert sorted(listed) == sorted((r.family, r.table, r.handle) for r in ruleset.rules)
    assert len(ruleset.rules) == 17


def test_real_counters_agree_with_the_nft_listing(ruleset):
    table = None
    checked = 0
    for line in LISTING.splitlines():
        match = re.match(r"table (\w+) (\w+) \{", line)
        if match:
            table = match.groups()
        match = re.search(r"counter packets (\d+) bytes (\d+).*# handle (\d+)$", line)
        if match:
            rule = by_handle(ruleset, *table, int(match.group(3)))
            assert (rule.packets, rule.bytes) == (int(match.group(1)), int(match.group(2)))
            checked += 1
    assert checked == 15


def test_real_drop_counters_match_the_traffic_sent(ruleset):
    assert by_handle(ruleset, "inet", "filt", 4).packets == SENT[("udp", 9000)] == 5
    assert by_handle(ruleset, "inet", "filt", 5).packets == SENT[("tcp", 8081)] == 2
    assert by_handle(ruleset, "ip", "filter", 2).packets == SENT[("udp", 9001)] == 3  # iptables-nft
    assert by_handle(ruleset, "inet", "filt", 17).packets == SENT[("udp", 9100)] == 2  # via jump audit


def test_real_rules_rendered_readably(ruleset):
    described = {(r.family, r.table, r.handle): r.describe() for r in ruleset.rules}
    assert described[("inet", "filt", 4)] == \
        'inet filt input handle 4: udp dport 9000 counter drop comment "block udp 9000"'
    assert described[("inet", "filt", 5)] == "inet filt input handle 5: tcp dport 8081 counter reject"
    assert described[("inet", "filt", 6)].endswith("ip saddr 127.0.0.2 counter drop")
    assert described[("inet", "filt", 7)].endswith("ip6 saddr 2001:db8::/32 counter drop")
    assert described[("inet", "filt", 8)].endswith("ct state invalid counter drop")
    assert described[("inet", "filt", 9)].endswith("udp dport @blocked_ports counter drop")
    assert described[("inet", "filt", 10)].endswith("tcp dport 1000-2000 counter drop")
    assert described[("inet", "filt", 12)].endswith("udp dport { ... } counter reject")
    assert described[("inet", "filt", 13)].endswith('iifname "veth*" drop')
    assert described[("inet", "filt", 17)] == 'inet filt audit handle 17: counter drop comment "audit drops"'
    # rules that do not drop are not rendered (large rulesets are mostly those): names only
    assert by_handle(ruleset, "inet", "filt", 15).matches is None
    assert described[("inet", "filt", 15)].endswith("meta cmp payload cmp immediate jump audit")
    # iptables-nft: the comment lives in the xtables `comment` match, REJECT is an xt target
    assert described[("ip", "filter", 2)] == \
        'ip filter INPUT handle 2: udp dport 9001 counter drop comment "ipt drop 9001"'
    assert by_handle(ruleset, "ip", "filter", 3).verdict == "reject"


def test_rendering_of_a_crafted_comparison():
    # meta l4proto udp; payload transport +2 (dport); cmp gte 1024
    jump = rule_msg("t", "c", 1, [
        expr("meta", nla(2, struct.pack("!I", 16)), nla(1, struct.pack("!I", 1))),
        expr("cmp", nla(1, struct.pack("!I", 1)), nla(2, struct.pack("!I", 0)), nla(3, nla(1, b"\x11"), nested=True)),
        expr("payload", nla(1, struct.pack("!I", 1)), nla(2, struct.pack("!I", 2)), nla(3, struct.pack("!I", 2)),
             nla(4, struct.pack("!I", 2))),
        expr("cmp", nla(1, struct.pack("!I", 1)), nla(2, struct.pack("!I", 5)),
             nla(3, nla(1, struct.pack("!H", 1024)), nested=True)),
        verdict(0)])
    _, (rule,) = nftables.parse_rules(jump + DONE)
    assert rule.matches == "udp dport >= 1024"


def test_real_verdicts_and_counter_presence(ruleset):
    dropping = {(r.table, r.handle) for r in ruleset.dropping_rules()}
    assert dropping == {("filt", h) for h in (4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 17)} | {("filter", 2), ("filter", 3)}
    uncounted = by_handle(ruleset, "inet", "filt", 13)
    assert uncounted.drops and uncounted.packets is None and uncounted.bytes is None
    assert by_handle(ruleset, "inet", "filt", 15).verdict == "jump audit"
    assert by_handle(ruleset, "inet", "filt", 16).verdict == "accept"


def test_counter_before_a_match_is_marked_inexact(ruleset):
    limited = by_handle(ruleset, "inet", "filt", 14)  # counter limit rate over ... drop
    assert limited.expressions == ("counter", "limit", "immediate")
    assert not limited.counter_exact
    assert by_handle(ruleset, "inet", "filt", 4).counter_exact


def test_real_chains_hooks_policies_and_policy_counters(ruleset):
    chains = {(c.family, c.table, c.name): c for c in ruleset.chains}
    assert chains[("inet", "filt", "input")].hook == "input"
    assert chains[("inet", "filt", "input")].priority == -10
    assert chains[("inet", "filt", "input")].policy == "accept"
    assert chains[("inet", "filt", "audit")].hook is None
    assert chains[("netdev", "edge", "ingress_lo")].hook == "ingress device lo"
    ipt = chains[("ip", "filter", "INPUT")]
    assert (ipt.policy, ipt.packets) == ("drop", 12)  # 6 to udp 7777, 2 RSTs, 4 ICMP port unreachable
    assert chains[("ip", "filter", "FORWARD")].packets == 0
    assert chains[("inet", "filt", "input")].packets is None  # nft base chains have no counter


def test_flat_counters_only_for_counted_drops_and_policies(ruleset):
    flat = nftables.counters(ruleset)
    assert flat["nft.drop.inet.filt.input.4.packets"] == 5
    assert flat["nft.drop.ip.filter.INPUT.2.packets"] == 3
    assert flat["nft.policy.ip.filter.INPUT.packets"] == 12
    assert flat["nft.policy.ip.filter.FORWARD.packets"] == 0
    assert "nft.drop.inet.filt.input.16.packets" not in flat  # accept
    assert "nft.drop.inet.filt.input.13.packets" not in flat  # no counter: absent, never 0
    assert "nft.policy.inet.filt.input.packets" not in flat  # policy accept
    assert len(flat) == 14


def test_generation_is_read(ruleset):
    assert isinstance(ruleset.generation, int) and ruleset.generation > 0


def test_empty_namespace_has_no_rules():
    empty = nftables.parse((FIXTURES / "empty_rules.bin").read_bytes(), (FIXTURES / "empty_chains.bin").read_bytes())
    assert empty.rules == [] and empty.chains == []
    assert nftables.counters(empty) == {}


# --- crafted replies --------------------------------------------------------------------------

def test_names_with_dots_cannot_collide_in_counter_names():
    a = rule_msg("a.b", "c", 1, [counter(1, 60), verdict(0)])
    b = rule_msg("a", "b.c", 1, [counter(2, 120), verdict(0)])
    _, rules = nftables.parse_rules(a + b + DONE)
    flat = nftables.counters(nftables.Ruleset(None, rules))
    assert len(flat) == 2
    assert "nft.drop.inet.a%2Eb.c.1.packets" in flat


def test_drop_with_errno_in_the_upper_bits_is_a_drop():
    # NF_DROP_ERR(-EPERM): the errno sits above the low byte, the verdict is still NF_DROP
    _, (rule,) = nftables.parse_rules(rule_msg("t", "c", 7, [counter(3, 180), verdict(1 << 16)]) + DONE)
    assert rule.verdict == "drop"


def test_unknown_expression_is_shown_by_name_and_does_not_fail():
    weird = expr("quota", nla(1, struct.pack("!Q", 5)))
    _, (rule,) = nftables.parse_rules(rule_msg("t", "c", 9, [weird, counter(0, 0), verdict(0)]) + DONE)
    assert rule.matches == "quota" and rule.verdict == "drop"


def test_userdata_comment_and_other_tlvs():
    userdata = bytes([5, 2, 1, 2]) + bytes([0, 6]) + b"hello\0"
    _, (rule,) = nftables.parse_rules(rule_msg("t", "c", 1, [verdict(0)], userdata=userdata) + DONE)
    assert rule.comment == "hello"
    _, (rule,) = nftables.parse_rules(rule_msg("t", "c", 1, [verdict(0)], userdata=bytes([0, 40]) + b"short") + DONE)
    assert rule.comment is None  # truncated TLV: no comment rather than garbage


def test_rule_without_a_handle_is_a_parse_error():
    with pytest.raises(ParseError, match="handle"):
        nftables.parse_rules(rule_msg("t", "c", None, [verdict(0)]) + DONE)


def test_counter_with_a_short_value_is_a_parse_error():
    bad = expr("counter", nla(2, b"\0\0\0\5"))
    with pytest.raises(ParseError, match="counter packets"):
        nftables.parse_rules(rule_msg("t", "c", 1, [bad, verdict(0)]) + DONE)


@pytest.mark.parametrize("cut", [5, 20, 100, len(RULES) // 2, len(RULES) - 30])
def test_truncated_real_dump_is_a_parse_error(cut):
    with pytest.raises(ParseError):
        nftables.parse_rules(RULES[:cut])


def test_error_message_inside_a_recorded_reply_is_a_parse_error():
    error = nlmsg(2, struct.pack("=i", -1) + b"\0" * 16)
    with pytest.raises(ParseError, match="netlink error"):
        nftables.parse_rules(error)


def test_other_message_types_are_ignored():
    chain_in_rule_dump = CHAINS
    assert nftables.parse_rules(chain_in_rule_dump) == (None, [])
    assert nftables.parse_chains(RULES) == []


# --- read(): through the context, as --netns and bundles do ----------------------------------

def replay_of(rules: bytes, chains: bytes) -> dict[str, bytes]:
    request = nftables.dump_request().hex()
    return {f"netlink/{NETLINK_NETFILTER}-{(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE}-{request}": rules,
            f"netlink/{NETLINK_NETFILTER}-{(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN}-{request}": chains}


def test_read_replays_recorded_dumps(ruleset):
    from dropdoc.sources import SOURCES

    ctx = ReadContext(root="/nonexistent", live=False, replay=replay_of(RULES, CHAINS))
    result = read_source(SOURCES["nftables"], ctx)
    assert result.ok
    assert result.data.rules == ruleset.rules and result.data.chains == ruleset.chains


def test_read_of_a_copied_tree_is_unavailable_not_failed():
    from dropdoc.sources import SOURCES

    result = read_source(SOURCES["nftables"], ReadContext(root="/nonexistent", live=False))
    assert result.status == "unavailable"
    assert "netlink" in result.error


def test_message_type_constants():
    assert (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE == 2566
    assert (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN == 2563


# --- legacy iptables: presence only ------------------------------------------------------------

def test_legacy_table_names_captured():
    assert nftables.parse_legacy_names((FIXTURES / "ip_tables_names").read_text()) == ["nat", "filter"]
    assert nftables.parse_legacy_names((FIXTURES / "ip6_tables_names").read_text()) == []


def test_legacy_tables_are_a_coverage_gap(tmp_path):
    from dropdoc.sources import SOURCES

    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "ip_tables_names").write_bytes((FIXTURES / "ip_tables_names").read_bytes())
    (tmp_path / "proc" / "net" / "ip6_tables_names").write_text("")
    result = read_source(SOURCES["iptables_legacy"], ReadContext(root=str(tmp_path), live=False))
    assert result.status == "unavailable"
    assert "iptables: nat, filter" in result.error and "iptables-legacy -L -v -n -x" in result.error


def test_no_legacy_tables_or_no_x_tables_is_ok(tmp_path):
    from dropdoc.sources import SOURCES

    (tmp_path / "proc" / "net").mkdir(parents=True)
    result = read_source(SOURCES["iptables_legacy"], ReadContext(root=str(tmp_path), live=False))
    assert result.ok and result.data == {}
    (tmp_path / "proc" / "net" / "ip_tables_names").write_text("")
    assert read_source(SOURCES["iptables_legacy"], ReadContext(root=str(tmp_path), live=False)).ok


def test_garbage_legacy_names_are_a_parse_error():
    with pytest.raises(ParseError):
        nftables.parse_legacy_names("filter\nnot a table name with spaces\n")


def test_missing_file_is_unavailable_not_parse_error(tmp_path):
    with pytest.raises(SourceUnavailable):
        ReadContext(root=str(tmp_path)).read("proc", "net", "ip_tables_names")
