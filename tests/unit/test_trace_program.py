"""The generated kfree_skb program: structure for every spec, and its behaviour run on a
small interpreter of the few BPF instructions it uses, over hand-built kernel objects
(skb, net_device, sock, net, packet headers) laid out with the captured 6.18 offsets.
The real kernel runs it in tests/functional/test_trace.py."""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import pytest

from dropdoc.trace import insn as I
from dropdoc.trace import program

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"
OFFSETS = program.Offsets(**json.loads((FIXTURES / "vmlinux_subset_6.18.expected.json").read_text())["offsets"])
COUNTS_FD, STATS_FD = 3, 4
MASK = (1 << 64) - 1


def s64(v: int) -> int:
    v &= MASK
    return v - (1 << 64) if v >> 63 else v


class Machine:
    """Runs one program invocation. Memory: the stack, the ctx args, and `kernel`
    objects {address: bytearray}; probe_read of unmapped memory faults (zeroes, -EFAULT)."""

    STACK_TOP = 0x7000_0000

    def __init__(self, kernel: dict[int, bytes], maps: dict[int, dict[bytes, int]] | None = None,
                 full: set[int] = frozenset()) -> None:
        self.kernel = {a: bytearray(b) for a, b in kernel.items()}
        self.stack = bytearray(512)
        self.maps = maps if maps is not None else {COUNTS_FD: {}, STATS_FD: {}}
        self.full = full  # maps that refuse inserts (map full)
        self.values: dict[int, tuple[int, bytes]] = {}

    def _region(self, addr: int, size: int) -> tuple[bytearray, int] | None:
        base = self.STACK_TOP - 512
        if base <= addr and addr + size <= self.STACK_TOP:
            return self.stack, addr - base
        for start, data in self.kernel.items():
            if start <= addr and addr + size <= start + len(data):
                return data, addr - start
        return None

    def read(self, addr: int, size: int) -> int:
        if addr in self.values:
            fd, key = self.values[addr]
            return self.maps[fd][key]
        region = self._region(addr, size)
        assert region is not None, f"program read unmapped memory {addr:#x}"
        data, off = region
        return int.from_bytes(data[off:off + size], "little")

    def write(self, addr: int, size: int, value: int) -> None:
        if addr in self.values:
            fd, key = self.values[addr]
            self.maps[fd][key] = value
            return
        region = self._region(addr, size)
        assert region is not None and region[0] is self.stack, f"write outside the stack {addr:#x}"
        data, off = region
        data[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def call(self, helper: int, r: list[int]) -> int:
        if helper == I.PROBE_READ_KERNEL:
            dst, size, src = r[1], r[2], r[3]
            region = self._region(src, size)
            value = 0 if region is None else int.from_bytes(region[0][region[1]:region[1] + size], "little")
            self.write(dst, size, value)
            return 0 if region is not None else -14
        fd = r[1] - 0x1000
        key = bytes(self.stack[r[2] - (self.STACK_TOP - 512):][:program.KEY_SIZE if fd == COUNTS_FD else 4])
        table = self.maps[fd]
        if helper == I.MAP_LOOKUP_ELEM:
            if fd == STATS_FD and key not in table:
                table[key] = 0  # an array map always has its slot
            if key not in table:
                return 0
            addr = 0x5000_0000 + len(self.values) * 16
            self.values[addr] = (fd, key)
            return addr
        if helper == I.MAP_UPDATE_ELEM:
            if fd in self.full or (r[4] == 1 and key in table):
                return -7
            table[key] = self.read(r[3], 8)
            return 0
        raise AssertionError(f"unexpected helper {helper}")

    def run(self, insns: list[I.Insn], args: list[int]) -> int:
        ctx = 0x6000_0000
        self.kernel[ctx] = bytearray(b"".join(struct.pack("<Q", a) for a in args))
        r = [0] * 11
        r[1], r[10] = ctx, self.STACK_TOP
        pc, steps = 0, 0
        while True:
            steps += 1
            assert steps < 10_000
            ins = insns[pc]
            cls, op, src_x = ins.code & 7, ins.code & 0xF0, ins.code & 0x08
            imm = ins.imm - (1 << 32) if ins.imm > 0x7FFFFFFF else ins.imm  # the kernel sign-extends
            if ins.code == I.LD | I.DW | I.IMM:
                value = (ins.imm & 0xFFFFFFFF) | (insns[pc + 1].imm << 32)
                r[ins.dst] = 0x1000 + value if ins.src == I.PSEUDO_MAP_FD else value
                pc += 2
                continue
            if cls == I.ALU64:
                operand = r[ins.src] if src_x else imm
                if op == I.MOV:
                    r[ins.dst] = operand & MASK
                elif op == I.ADD:
                    r[ins.dst] = (r[ins.dst] + operand) & MASK
                else:
                    raise AssertionError(f"alu op {op:#x}")
            elif cls == I.LDX:
                r[ins.dst] = self.read(r[ins.src] + ins.off, I.SIZE_BYTES[ins.code & 0x18])
            elif cls == I.STX:
                self.write(r[ins.dst] + ins.off, I.SIZE_BYTES[ins.code & 0x18], r[ins.src])
            elif cls == I.ST:
                self.write(r[ins.dst] + ins.off, I.SIZE_BYTES[ins.code & 0x18], imm)
            elif cls in (I.JMP, I.JMP32):
                if op == I.EXIT:
                    return r[0]
                if op == I.CALL:
                    r[0] = self.call(ins.imm, r) & MASK
                    pc += 1
                    continue
                a = r[ins.dst]
                b = r[ins.src] if src_x else imm & MASK
                if cls == I.JMP32:
                    a, b = a & 0xFFFFFFFF, b & 0xFFFFFFFF
                taken = {I.JA: True, I.JEQ: a == b, I.JNE: a != b, I.JSLT: s64(a) < s64(b),
                         I.JSGE: s64(a) >= s64(b)}[op]
                pc += 1 + (ins.off if taken else 0)
                continue
            else:
                raise AssertionError(f"class {cls}")
            pc += 1


SKB, DEV, NET_A, NET_B, SOCK, HEAD = (0xFFFF_8880_0000_0000 + i * 0x10000 for i in range(6))
LOCATION = 0xFFFF_FFFF_8204_8C10 + 0x4BC


def objects(dev: int = DEV, sk: int = 0, ethertype: int = 0x0800, l4: int = 17, dport: int = 9100,
            inum_a: int = 4026532177, inum_b: int = 4026532392, transport: int = 34) -> dict[int, bytes]:
    skb = bytearray(256)
    struct.pack_into("<Q", skb, OFFSETS.skb_dev, dev)
    struct.pack_into("<Q", skb, OFFSETS.skb_sk, sk)
    struct.pack_into(">H", skb, OFFSETS.skb_protocol, ethertype)
    struct.pack_into("<Q", skb, OFFSETS.skb_head, HEAD)
    struct.pack_into("<H", skb, OFFSETS.skb_network_header, 14)
    struct.pack_into("<H", skb, OFFSETS.skb_transport_header, transport)
    device = bytearray(512)
    struct.pack_into("<Q", device, OFFSETS.dev_nd_net, NET_A)
    sock = bytearray(256)
    struct.pack_into("<Q", sock, OFFSETS.sk_net, NET_B)
    net_a, net_b = bytearray(512), bytearray(512)
    struct.pack_into("<I", net_a, OFFSETS.net_inum, inum_a)
    struct.pack_into("<I", net_b, OFFSETS.net_inum, inum_b)
    packet = bytearray(64)
    if ethertype == 0x0800:
        packet[14 + 9] = l4
    else:
        packet[14 + 6] = l4
    struct.pack_into(">HH", packet, 34, 40000, dport)
    return {SKB: skb, DEV: device, SOCK: sock, NET_A: net_a, NET_B: net_b, HEAD: packet}


def run(spec: program.Spec, args: list[int], kernel: dict[int, bytes], machine: Machine | None = None):
    machine = machine or Machine(kernel)
    insns = program.build(spec, OFFSETS, COUNTS_FD, STATS_FD)
    assert machine.run(insns, args) == 0
    keys = {program.decode_key(k, spec.nargs >= 3 and "reason" in spec.by): v
            for k, v in machine.maps[COUNTS_FD].items()}
    return keys, machine


ALL = frozenset(program.FIELDS)


def test_full_key_from_the_device_path():
    keys, _ = run(program.Spec(3, ALL), [SKB, LOCATION, 3], objects())
    (key, count), = keys.items()
    assert count == 1
    assert (key.reason, key.location, key.netns) == (3, LOCATION, 4026532177)
    assert (key.ethertype, key.l4, key.port) == (0x0800, 17, 9100)


def test_socket_is_preferred_to_the_device_and_rx_sk_to_both():
    keys, _ = run(program.Spec(3, frozenset({"netns"})), [SKB, LOCATION, 3], objects(sk=SOCK))
    assert [k.netns for k in keys] == [4026532392]  # skb->sk's netns
    rx_sock = SOCK
    keys, _ = run(program.Spec(4, frozenset({"netns"})), [SKB, LOCATION, 3, rx_sock], objects(sk=0))
    assert [k.netns for k in keys] == [4026532392]  # rx_sk's netns
    keys, _ = run(program.Spec(4, frozenset({"netns"})), [SKB, LOCATION, 3, 0], objects(sk=0))
    assert [k.netns for k in keys] == [4026532177]  # no socket: the device's


def test_dev_scratch_is_not_followed():
    # udp stores lengths in skb->dev (dev_scratch) once queued: not a kernel pointer
    scratch = 0x0000_1234_0000_05DC
    kernel = objects(dev=scratch)
    kernel[scratch] = kernel[DEV]  # even if that value happened to be readable memory
    keys, _ = run(program.Spec(3, frozenset({"netns", "reason"})), [SKB, LOCATION, 4], kernel)
    assert [(k.netns, k.reason) for k in keys] == [(0, 4)]


def test_netns_filter_with_inode_above_2_31():
    spec = program.Spec(3, frozenset({"reason"}), netns=4026532177)
    keys, _ = run(spec, [SKB, LOCATION, 12], objects())
    assert sum(keys.values()) == 1 and next(iter(keys)).netns == 0  # filtered on, not keyed
    keys, _ = run(spec, [SKB, LOCATION, 12], objects(inum_a=4026532999))
    assert keys == {}


@pytest.mark.parametrize("proto_filter, l4, port, kept", [
    (dict(ethertype=0x0800), 17, 9100, True), (dict(ethertype=0x86DD), 17, 9100, False),
    (dict(l4=17), 17, 9100, True), (dict(l4=6), 17, 9100, False),
    (dict(port=9100), 17, 9100, True), (dict(port=9101), 17, 9100, False),
    (dict(port=9100), 1, 9100, False),  # icmp has no ports
])
def test_protocol_and_port_filters(proto_filter, l4, port, kept):
    keys, _ = run(program.Spec(3, frozenset({"reason"}), **proto_filter), [SKB, LOCATION, 3], objects(l4=l4, dport=port))
    assert bool(keys) is kept


def test_ipv6_next_header_and_unset_transport_header():
    keys, _ = run(program.Spec(3, ALL), [SKB, LOCATION, 3], objects(ethertype=0x86DD, l4=6, dport=443))
    assert [(k.ethertype, k.l4, k.port) for k in keys] == [(0x86DD, 6, 443)]
    keys, _ = run(program.Spec(3, ALL), [SKB, LOCATION, 3], objects(transport=0xFFFF))
    assert [(k.l4, k.port) for k in keys] == [(17, 0)]


def test_counts_accumulate_and_map_full_is_lost_not_dropped():
    spec = program.Spec(3, frozenset({"reason", "location"}))
    machine = Machine(objects())
    for reason in (3, 3, 12):
        run(spec, [SKB, LOCATION, reason], {}, machine)
    counts = {program.decode_key(k, True).reason: v for k, v in machine.maps[COUNTS_FD].items()}
    assert counts == {3: 2, 12: 1}
    full = Machine(objects(), full={COUNTS_FD})
    keys, _ = run(spec, [SKB, LOCATION, 3], {}, full)
    assert keys == {} and full.maps[STATS_FD] == {b"\0\0\0\0": 1}


def test_two_argument_kernels_read_no_reason():
    spec = program.Spec(2, frozenset({"reason", "location"}))
    keys, _ = run(spec, [SKB, LOCATION], objects())
    assert [(k.reason, k.location) for k in keys] == [(None, LOCATION)]


@pytest.mark.parametrize("nargs, by_size, filters", list(itertools.product(
    (2, 3, 4), range(1, 6), ((), ("netns",), ("ethertype", "l4", "port")))))
def test_every_spec_assembles_and_reads_only_its_arguments(nargs, by_size, filters):
    by = frozenset(program.FIELDS[:by_size])
    values = {"netns": 4026532177, "ethertype": 0x0800, "l4": 17, "port": 53}
    spec = program.Spec(nargs, by, **{f: values[f] for f in filters})
    insns = program.build(spec, OFFSETS, COUNTS_FD, STATS_FD)
    assert insns[-1] == I.exit_()
    ctx_reads = [i.off for i in insns if i.code == I.LDX | I.DW | I.MEM and i.src == I.R6]
    assert max(ctx_reads) == 8 * (nargs - 1)  # exactly its arguments: attach probes the count
    for index, ins in enumerate(insns):
        if ins.code & 7 in (I.JMP, I.JMP32) and ins.code & 0xF0 not in (I.CALL, I.EXIT):
            assert 0 <= index + ins.off + 1 < len(insns)


def test_spec_needs_offsets_for_skb_fields():
    with pytest.raises(ValueError):
        program.build(program.Spec(3, frozenset({"netns"})), None, 3, 4)
    assert program.build(program.Spec(3, frozenset({"reason"})), None, 3, 4)
    with pytest.raises(ValueError):
        program.build(program.Spec(5), None, 3, 4)
