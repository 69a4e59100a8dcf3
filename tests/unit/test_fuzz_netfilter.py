"""Property tests for the firewall/conntrack parsers: whatever bytes the kernel (or a
damaged bundle) hands them, they return a result or raise ParseError - nothing else.

Inputs: random bytes/text, text from the format's own alphabet, and mutations of the real
fixtures (truncation, byte flips, insertions, deletions, line shuffles)."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc.errors import ParseError
from dropdoc.sources import conntrack, nftables

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NFT_SEEDS = [(FIXTURES / "nftables" / name).read_bytes()
             for name in ("rules.bin", "chains.bin", "empty_rules.bin", "empty_chains.bin")]
CT_SEEDS = [(FIXTURES / "conntrack" / name).read_bytes()
            for name in ("nf_conntrack", "full_after", "nf_conntrack_2.6.32", "nf_conntrack_4.19",
                         "nf_conntrack_5.10", "nf_conntrack_6.x_insert_failed")]
LEGACY_SEEDS = [(FIXTURES / "nftables" / "ip_tables_names").read_bytes(), b"filter\n", b""]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "lines", "length"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b" ", b"\n", b"-1", b"0x", b"\xff\xfe", b"\x00", b"\xc2\xb2", b"entries "]))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "lines":
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
        elif op == "length" and pos + 2 <= len(data):
            # netlink lengths are u16/u32 little-endian: make one wrong
            data[pos:pos + 2] = struct.pack("=H", draw(st.integers(0, 0xFFFF)))
    return bytes(data)


def only_parse_errors(parse, data) -> None:
    try:
        parse(data)
    except ParseError:
        pass


@FUZZ
@given(st.binary(max_size=600) | mutated(NFT_SEEDS))
def test_nft_rules_parser(data):
    only_parse_errors(nftables.parse_rules, data)


@FUZZ
@given(st.binary(max_size=600) | mutated(NFT_SEEDS))
def test_nft_chains_parser(data):
    only_parse_errors(nftables.parse_chains, data)


@FUZZ
@given(mutated(NFT_SEEDS), mutated(NFT_SEEDS))
def test_nft_ruleset_and_counters(rules, chains):
    try:
        ruleset = nftables.parse(rules, chains)
    except ParseError:
        return
    for name, value in nftables.counters(ruleset).items():
        assert name.startswith(("nft.drop.", "nft.policy.")) and name.endswith(".packets")
        assert isinstance(value, int) and value >= 0
    for rule in ruleset.rules:
        assert isinstance(rule.describe(), str)


@FUZZ
@given(st.text(max_size=400) | mutated(CT_SEEDS).map(lambda b: b.decode("utf-8", errors="replace"))
       | st.text(alphabet="0123456789abcdef \nentriesdroplyf_", max_size=400))
def test_conntrack_parser(text):
    try:
        stats = conntrack.parse(text)
    except ParseError:
        return
    for name, value in conntrack.counters(stats).items():
        assert name.startswith("conntrack.cpu") and 0 <= value < 1 << 32


@FUZZ
@given(st.text(max_size=200) | mutated(LEGACY_SEEDS).map(lambda b: b.decode("utf-8", errors="replace")))
def test_legacy_names_parser(text):
    only_parse_errors(nftables.parse_legacy_names, text)
