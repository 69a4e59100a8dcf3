"""Property tests for the firewall/conntrack parsers: whatever bytes the kernel (or a
damaged bundle) hands them, they return a result or raise ParseError - nothing else.

Inputs: random bytes/text, text from the format's own alphabet, and mutations of the real
fixtures (truncation, byte flips, insertions, deletions, line shuffles)."""

from __future__ import annotations

from fuzzing import FUZZ, REFUSED, decode, fixture, fixtures, mutated, overwrite_u16, parse_or_refuse, text_edits
from hypothesis import given
from hypothesis import strategies as st

from dropdoc.sources import conntrack, nftables

# netlink lengths are u16/u32 little-endian: overwrite_u16 makes one wrong
EDITS = (*text_edits(b"entries "), overwrite_u16())

NFT_SEEDS = fixtures("nftables", "rules.bin", "chains.bin", "empty_rules.bin", "empty_chains.bin")
CT_SEEDS = fixtures("conntrack", "nf_conntrack", "full_after", "nf_conntrack_2.6.32", "nf_conntrack_4.19",
                    "nf_conntrack_5.10", "nf_conntrack_6.x_insert_failed")
LEGACY_SEEDS = [fixture("nftables/ip_tables_names"), b"filter\n", b""]


@FUZZ
@given(st.binary(max_size=600) | mutated(NFT_SEEDS, EDITS))
def test_nft_rules_parser(data):
    parse_or_refuse(nftables.parse_rules, data)


@FUZZ
@given(st.binary(max_size=600) | mutated(NFT_SEEDS, EDITS))
def test_nft_chains_parser(data):
    parse_or_refuse(nftables.parse_chains, data)


@FUZZ
@given(mutated(NFT_SEEDS, EDITS), mutated(NFT_SEEDS, EDITS))
def test_nft_ruleset_and_counters(rules, chains):
    ruleset = parse_or_refuse(nftables.parse, rules, chains)
    if ruleset is REFUSED:
        return
    for name, value in nftables.counters(ruleset).items():
        assert name.startswith(("nft.drop.", "nft.policy.")) and name.endswith(".packets")
        assert isinstance(value, int) and value >= 0
    for rule in ruleset.rules:
        assert isinstance(rule.describe(), str)


@FUZZ
@given(st.text(max_size=400) | mutated(CT_SEEDS, EDITS).map(decode)
       | st.text(alphabet="0123456789abcdef \nentriesdroplyf_", max_size=400))
def test_conntrack_parser(text):
    stats = parse_or_refuse(conntrack.parse, text)
    if stats is not REFUSED:
        for name, value in conntrack.counters(stats).items():
            assert name.startswith("conntrack.cpu") and 0 <= value < 1 << 32


@FUZZ
@given(st.text(max_size=200) | mutated(LEGACY_SEEDS, EDITS).map(decode))
def test_legacy_names_parser(text):
    parse_or_refuse(nftables.parse_legacy_names, text)
