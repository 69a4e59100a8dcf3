"""Property tests for the tracer's parsers: whatever bytes they get, they return a result
or raise ParseError - never IndexError, struct.error, RecursionError, UnicodeError...
Inputs: random data and mutations of the captured fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc.errors import ParseError
from dropdoc.trace import bpf, kallsyms, reasons, tracefs
from dropdoc.trace import btf as btf_mod

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"
sys.path.insert(0, str(FIXTURES))
from btf_writer import BtfWriter

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def seed(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


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


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "word"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[pos:]
        elif op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "word" and pos + 4 <= len(data):
            data[pos:pos + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "little")
    return bytes(data)


def text_of(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def exercise_btf(data: bytes) -> None:
    try:
        parsed = btf_mod.parse(data)
    except ParseError:
        return
    for struct_name, path in (("sk_buff", "protocol"), ("sk_buff", "dev"), ("net", "ns.inum"),
                              ("sk_buff", "ns.inum"), ("net_device", "nd_net")):
        try:
            parsed.member_offset(struct_name, path)
        except ParseError:
            pass
    for enum in ("skb_drop_reason", "skb_drop_reason_subsys"):
        try:
            parsed.enum(enum)
        except ParseError:
            pass


@FUZZ
@given(st.one_of(mutated(BTF_SEEDS), st.binary(max_size=256)))
def test_btf(data):
    exercise_btf(data)


@FUZZ
@given(st.one_of(mutated(FORMAT_SEEDS), st.text(max_size=300)))
def test_format(data):
    text = text_of(data) if isinstance(data, bytes) else data
    try:
        reasons.parse_format(text)
    except ParseError:
        pass


@FUZZ
@given(st.one_of(mutated(TRACE_SEEDS), st.text(max_size=300)))
def test_trace_lines(data):
    text = text_of(data) if isinstance(data, bytes) else data
    counts, lost = tracefs.parse_events(text)
    assert lost >= 0 and all(n > 0 for n in counts.values())


@FUZZ
@given(st.one_of(mutated(STATS_SEEDS), st.text(max_size=200)))
def test_stats(data):
    text = text_of(data) if isinstance(data, bytes) else data
    try:
        stats = tracefs.parse_stats(text)
    except ParseError:
        return
    assert tracefs.lost_from_stats([stats]) >= 0


@FUZZ
@given(st.one_of(mutated(KALLSYMS_SEEDS), st.text(max_size=300)))
def test_kallsyms(data):
    text = text_of(data) if isinstance(data, bytes) else data
    try:
        symbols = kallsyms.parse(text)
    except ParseError:
        return
    assert isinstance(symbols.resolve(0xFFFFFFFF82048C10), str)


@FUZZ
@given(st.one_of(st.text(alphabet="0123456789,- \n", max_size=30), st.text(max_size=30)))
def test_cpu_list(text):
    try:
        cpus = bpf.parse_cpu_list(text)
    except ParseError:
        return
    assert cpus and min(cpus) >= 0


@FUZZ
@given(st.text(max_size=300))
def test_find_mount(text):
    result = tracefs.find_mount(text)
    assert result is None or isinstance(result, str)
