"""Property tests for the tracer's parsers: whatever bytes they get, they return a result
or raise ParseError - never IndexError, struct.error, RecursionError, UnicodeError...
Inputs: random data and mutations of the captured fixtures."""

from __future__ import annotations

import sys

from fuzzing import (FIXTURES, FUZZ, REFUSED, decode, delete, flip_bit, insert, mutated, overwrite_u32,
                     parse_or_refuse, truncate)
from hypothesis import given
from hypothesis import strategies as st

from dropdoc.trace import bpf, kallsyms, reasons, tracefs
from dropdoc.trace import btf as btf_mod

TRACE_FIXTURES = FIXTURES / "trace"
sys.path.insert(0, str(TRACE_FIXTURES))
from btf_writer import BtfWriter

# bits flipped (flags, type kinds, off-by-a-power-of-two sizes) and whole u32 words
# overwritten (BTF offsets, lengths and counts) rather than whole bytes replaced
EDITS = (truncate, flip_bit, insert(), delete(), overwrite_u32())


def seed(name: str) -> bytes:
    return (TRACE_FIXTURES / name).read_bytes()


def small_btf() -> bytes:
    w = BtfWriter()
    u32 = w.int("unsigned int", 4)
    ptr = w.ptr(0)
    anon = w.struct("", 8, [("dev", ptr, 0)], union=True)
    ns = w.struct("ns_common", 8, [("inum", u32, 0), ("x", u32, 32)])
    w.struct("sk_buff", 64, [("", anon, 0), ("protocol", u32, 64), ("ns", ns, 128)])
    w.enum("skb_drop_reason", {"SKB_DROP_REASON_NO_SOCKET": 3})
    return w.bytes()


BTF_SEEDS = [seed("vmlinux_subset_6.18.btf"), small_btf()]
FORMAT_SEEDS = [seed(n) for n in ("kfree_skb_format_6.18", "kfree_skb_format_6.1", "kfree_skb_format_5.15")]
TRACE_SEEDS = [seed("trace_6.18.txt"), seed("trace_crafted_old_kernels.txt")]
STATS_SEEDS = [seed("stats_overrun_cpu0"), seed("stats_overrun_cpu1")]
KALLSYMS_SEEDS = [seed("kallsyms_excerpt_6.18"), seed("kallsyms_nonroot_6.18")]


def text_of(seeds: list[bytes], max_size: int = 300) -> st.SearchStrategy[str]:
    """The seeds mutated, or any text."""
    return st.one_of(mutated(seeds, EDITS).map(decode), st.text(max_size=max_size))


def exercise_btf(data: bytes) -> None:
    parsed = parse_or_refuse(btf_mod.parse, data)
    if parsed is REFUSED:
        return
    for struct_name, path in (("sk_buff", "protocol"), ("sk_buff", "dev"), ("net", "ns.inum"),
                              ("sk_buff", "ns.inum"), ("net_device", "nd_net")):
        parse_or_refuse(parsed.member_offset, struct_name, path)
    for enum in ("skb_drop_reason", "skb_drop_reason_subsys"):
        parse_or_refuse(parsed.enum, enum)


@FUZZ
@given(st.one_of(mutated(BTF_SEEDS, EDITS), st.binary(max_size=256)))
def test_btf(data):
    exercise_btf(data)


@FUZZ
@given(text_of(FORMAT_SEEDS))
def test_format(text):
    parse_or_refuse(reasons.parse_format, text)


@FUZZ
@given(text_of(TRACE_SEEDS))
def test_trace_lines(text):
    counts, lost = tracefs.parse_events(text)
    assert lost >= 0 and all(n > 0 for n in counts.values())


@FUZZ
@given(text_of(STATS_SEEDS, max_size=200))
def test_stats(text):
    stats = parse_or_refuse(tracefs.parse_stats, text)
    if stats is not REFUSED:
        assert tracefs.lost_from_stats([stats]) >= 0


@FUZZ
@given(text_of(KALLSYMS_SEEDS))
def test_kallsyms(text):
    symbols = parse_or_refuse(kallsyms.parse, text)
    if symbols is not REFUSED:
        assert isinstance(symbols.resolve(0xFFFFFFFF82048C10), str)


@FUZZ
@given(st.one_of(st.text(alphabet="0123456789,- \n", max_size=30), st.text(max_size=30)))
def test_cpu_list(text):
    cpus = parse_or_refuse(bpf.parse_cpu_list, text)
    if cpus is not REFUSED:
        assert cpus and min(cpus) >= 0


@FUZZ
@given(st.text(max_size=300))
def test_find_mount(text):
    result = tracefs.find_mount(text)
    assert result is None or isinstance(result, str)
