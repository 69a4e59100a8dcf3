"""BTF parsing: offsets the tracer reads, on the cut-down capture of this machine's
vmlinux BTF, on a crafted older layout, on broken blobs, and on the live kernel."""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

from dropdoc.errors import ParseError
from dropdoc.trace import btf as btf_mod
from dropdoc.trace import program, reasons
from dropdoc.trace.ebpf import BpfBackend

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"
sys.path.insert(0, str(FIXTURES))
from btf_writer import BtfWriter

EXPECTED = json.loads((FIXTURES / "vmlinux_subset_6.18.expected.json").read_text())


@pytest.fixture(scope="module")
def subset() -> btf_mod.Btf:
    return btf_mod.parse((FIXTURES / "vmlinux_subset_6.18.btf").read_bytes())


def test_subset_reproduces_offsets_of_the_full_btf(subset):
    for key, value in EXPECTED.items():
        if "." in key:
            struct_name, path = key.split(".", 1)
            assert list(subset.member_offset(struct_name, path)) == value, key


def test_offsets_inside_anonymous_unions_and_embedded_structs(subset):
    # protocol sits in struct_group(headers) (an anonymous union of anonymous structs),
    # dev in a union inside an anonymous struct inside a union: the walk must descend.
    assert subset.member_offset("sk_buff", "protocol") == (176, 2)
    assert subset.member_offset("sk_buff", "dev") == (16, 8)
    assert subset.member_offset("net", "ns.inum") == (176, 4)
    assert program.Offsets.from_btf(subset).__dict__ == EXPECTED["offsets"]


def test_drop_reason_enum_from_btf(subset):
    core = subset.enum("skb_drop_reason")
    assert len(core) == EXPECTED["skb_drop_reason"]["count"]
    assert core[3] == "SKB_DROP_REASON_NO_SOCKET"
    assert max(core) == 0xFFFF0000  # SUBSYS_MASK: an unsigned 32-bit enumerator
    names = reasons.from_btf_enums(core, subset.enum("skb_drop_reason_subsys"))
    assert names.name(3) == "NO_SOCKET"
    assert names.name(2 << 16 | 7) == "OPENVSWITCH:7"
    assert names.name(1) == "CONSUMED"


def test_btf_and_format_file_agree_on_this_kernel(subset):
    """Both were captured on the same kernel: every reason the format file lists has the
    same name in BTF (the format file omits NOT_DROPPED_YET and CONSUMED)."""
    from_btf = reasons.from_btf_enums(subset.enum("skb_drop_reason"), {})
    fmt = reasons.parse_format((FIXTURES / "kfree_skb_format_6.18").read_text())
    assert fmt.reasons
    for value, name in fmt.reasons.items():
        assert from_btf.name(value) == name


def old_kernel_btf(with_reason_enum: bool = False) -> bytes:
    """A 5.10-like layout: protocol a direct member of sk_buff, no drop-reason enum,
    ns_common {stashed, ops, inum}."""
    w = BtfWriter()
    u8, u16, u32, u64 = w.int("u8", 1), w.int("u16", 2), w.int("unsigned int", 4), w.int("u64", 8)
    be16 = w.typedef("__be16", u16)
    ptr = w.ptr(0)
    dev_union = w.struct("", 8, [("dev", ptr, 0), ("dev_scratch", u64, 0)], union=True)
    inner = w.struct("", 24, [("next", ptr, 0), ("prev", ptr, 64), ("", dev_union, 128)])
    outer = w.struct("", 24, [("", inner, 0), ("rbnode", w.array(u8, u32, 24), 0)], union=True)
    flags = w.struct("", 1, [("cloned", u8, 1 << 24 | 0), ("nohdr", u8, 1 << 24 | 1)], bitfields=True)
    w.struct("sk_buff", 232, [("", outer, 0), ("sk", ptr, 192), ("flags", flags, 256),
                              ("protocol", be16, 8 * 180), ("transport_header", u16, 8 * 182),
                              ("network_header", u16, 8 * 184), ("head", ptr, 8 * 200)])
    pnet = w.typedef("possible_net_t", w.struct("", 8, [("net", ptr, 0)]))
    w.struct("net_device", 2048, [("name", w.array(u8, u32, 16), 0), ("nd_net", pnet, 8 * 1200)])
    w.struct("sock_common", 136, [("skc_daddr", u32, 0), ("skc_net", pnet, 8 * 48)])
    ns_common = w.struct("ns_common", 24, [("stashed", u64, 0), ("ops", ptr, 64), ("inum", u32, 128)])
    w.struct("net", 4096, [("passive", u32, 0), ("ns", ns_common, 8 * 120)])
    if with_reason_enum:
        w.enum("skb_drop_reason", {"SKB_DROP_REASON_NOT_SPECIFIED": 1, "SKB_DROP_REASON_NO_SOCKET": 2})
    return w.bytes()


def test_crafted_old_layout_offsets():
    old = btf_mod.parse(old_kernel_btf())
    offsets = program.Offsets.from_btf(old)
    assert (offsets.skb_protocol, offsets.skb_dev, offsets.skb_head) == (180, 16, 200)
    assert (offsets.dev_nd_net, offsets.sk_net, offsets.net_inum) == (1200, 48, 136)
    assert old.size(old.find("sk_buff", (btf_mod.STRUCT,))) == 232


def test_no_reason_enum_gives_no_names_not_a_crash():
    old = btf_mod.parse(old_kernel_btf())
    with pytest.raises(ParseError):
        old.enum("skb_drop_reason")
    names = BpfBackend._reason_names(old)
    assert names.source == "none" and names.name(2) == "UNKNOWN_2"
    with_enum = BpfBackend._reason_names(btf_mod.parse(old_kernel_btf(with_reason_enum=True)))
    assert with_enum.name(2) == "NO_SOCKET"  # the numbers of *this* kernel, not 6.18's


def test_paths_that_cannot_be_read():
    old = btf_mod.parse(old_kernel_btf())
    with pytest.raises(ParseError, match="bitfield"):
        old.member_offset("sk_buff", "flags.nohdr")
    with pytest.raises(ParseError, match="not an embedded struct"):
        old.member_offset("sk_buff", "sk.skc_net")  # through a pointer
    with pytest.raises(ParseError, match="no member"):
        old.member_offset("sk_buff", "mark")
    with pytest.raises(ParseError, match="no struct/union named"):
        old.member_offset("sk_buf", "dev")


def test_unknown_version_kind_and_loops():
    data = bytearray(old_kernel_btf())
    data[2] = 2
    with pytest.raises(ParseError, match="version"):
        btf_mod.parse(bytes(data))
    w = BtfWriter()
    w.raw("x", 25, 0, 0)  # no such kind
    with pytest.raises(ParseError, match="kind"):
        btf_mod.parse(w.bytes())
    w = BtfWriter()
    w.typedef("a", 2)
    w.typedef("b", 1)  # a -> b -> a
    w.struct("s", 4, [("m", 1, 0)])
    loop = btf_mod.parse(w.bytes())
    with pytest.raises(ParseError):
        loop.member_offset("s", "m")
    w = BtfWriter()
    w.array(1, 1, 2)  # an array of itself
    w.struct("s", 4, [("m", 1, 0)])
    with pytest.raises(ParseError):
        btf_mod.parse(w.bytes()).member_offset("s", "m")


@pytest.mark.parametrize("damage", ["magic", "swapped", "short", "sections", "name", "truncated", "nul"])
def test_broken_blobs_raise_parse_error(damage):
    data = bytearray(old_kernel_btf())
    if damage == "magic":
        data[0:2] = b"\x00\x00"
    elif damage == "swapped":
        data[0:2] = struct.pack(">H", 0xEB9F)
    elif damage == "short":
        data = data[:20]
    elif damage == "sections":
        struct.pack_into("<I", data, 20, 1 << 20)  # str_len past the end
    elif damage == "name":
        struct.pack_into("<I", data, 24, 1 << 20)  # first type's name offset
    elif damage == "truncated":
        type_len = struct.unpack_from("<I", data, 12)[0]
        struct.pack_into("<I", data, 12, type_len - 8)
        struct.pack_into("<I", data, 16, type_len - 8)
    elif damage == "nul":
        data[-1:] = b"x"
    with pytest.raises(ParseError):
        btf_mod.parse(bytes(data))


@pytest.mark.skipif(not os.access("/sys/kernel/btf/vmlinux", os.R_OK), reason="no kernel BTF here")
def test_live_kernel_btf_has_what_the_tracer_needs():
    live = btf_mod.read_vmlinux()
    offsets = program.Offsets.from_btf(live)
    assert offsets.skb_protocol > 0 and offsets.net_inum > 0
    assert reasons.from_btf_enums(live.enum("skb_drop_reason"), {}).number("NO_SOCKET") is not None
