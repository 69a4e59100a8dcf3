"""The in-kernel half of the tracer: a raw-tracepoint program for skb:kfree_skb, generated
for the running kernel (struct offsets from BTF) and for the question asked (which key
fields, which filters) - so nothing is computed per packet that nobody asked for.

Raw tracepoint arguments (ctx is an array of u64):
    kfree_skb(skb, location)                  < 5.17
    kfree_skb(skb, location, reason)          5.17 .. 6.10
    kfree_skb(skb, location, reason, rx_sk)   >= 6.11
Reading an argument the tracepoint does not have makes the attach fail with EINVAL,
which is how the loader probes the variant.

Per packet: build a 24-byte key on the stack, apply the filters (constants patched into
the instructions), then count in a per-CPU hash (no atomics, no contention). When the
map is full the event is counted in slot 0 of a per-CPU array: reported as `lost`.

Key layout (all fields zero unless asked for):
    0  u32 reason      4  u32 netns inode    8  u64 location (return address)
   16  be16 ethertype  18 u8 l4 protocol     19 u8 pad   20 be16 destination port  22 pad
The netns is that of the receiving socket (rx_sk), else of the packet's socket, else of
the device it is on; 0 when none is known.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import insn as I
from .btf import Btf

KEY_SIZE = 24
KEY = struct.Struct("<IIQHBxHxx")
FIELDS = ("reason", "location", "netns", "proto", "port")

_KEY_OFF = -24
_SCRATCH = -32
_VALUE = -40
_STATS_KEY = -48

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
L4_WITH_PORTS = (6, 17, 132)  # tcp, udp, sctp


def be16_as_loaded(value: int) -> int:
    """A big-endian 16-bit field read by a little-endian u16 load."""
    return int.from_bytes(value.to_bytes(2, "big"), "little")


@dataclass(frozen=True)
class Offsets:
    """Byte offsets inside kernel structures, from the running kernel's BTF."""
    skb_dev: int
    skb_sk: int
    skb_protocol: int
    skb_head: int
    skb_transport_header: int
    skb_network_header: int
    dev_nd_net: int
    sk_net: int  # struct sock_common.skc_net (first member of every socket kind)
    net_inum: int  # struct net.ns.inum

    @classmethod
    def from_btf(cls, btf: Btf) -> Offsets:
        btf.prefetch(("sk_buff", "net_device", "sock_common", "net"))
        off = lambda s, p: btf.member_offset(s, p)[0]
        return cls(
            skb_dev=off("sk_buff", "dev"),
            skb_sk=off("sk_buff", "sk"),
            skb_protocol=off("sk_buff", "protocol"),
            skb_head=off("sk_buff", "head"),
            skb_transport_header=off("sk_buff", "transport_header"),
            skb_network_header=off("sk_buff", "network_header"),
            dev_nd_net=off("net_device", "nd_net"),
            sk_net=off("sock_common", "skc_net"),
            net_inum=off("net", "ns.inum"),
        )


@dataclass(frozen=True)
class Spec:
    """What to compute per drop. `by` names the key fields; filters are exact matches."""
    nargs: int = 3  # 2, 3 or 4 tracepoint arguments
    by: frozenset[str] = frozenset({"reason", "location"})
    netns: int | None = None  # netns inode to keep
    ethertype: int | None = None  # e.g. 0x0800
    l4: int | None = None  # e.g. 17
    port: int | None = None  # destination port

    @property
    def need_netns(self) -> bool:
        return "netns" in self.by or self.netns is not None

    @property
    def need_l4(self) -> bool:
        return "proto" in self.by or "port" in self.by or self.l4 is not None or self.port is not None

    @property
    def need_port(self) -> bool:
        return "port" in self.by or self.port is not None

    @property
    def need_ethertype(self) -> bool:
        return self.need_l4 or self.ethertype is not None


def _probe_read(asm: I.Assembler, dst_off: int, size: int, src_reg: int, src_off: int) -> None:
    """bpf_probe_read_kernel(fp + dst_off, size, src_reg + src_off); zeroes dst on fault."""
    asm.emit(I.mov_reg(I.R1, I.FP), I.alu_imm(I.ADD, I.R1, dst_off), I.mov_imm(I.R2, size),
             I.mov_reg(I.R3, src_reg))
    if src_off:
        asm.emit(I.alu_imm(I.ADD, I.R3, src_off))
    asm.emit(I.call(I.PROBE_READ_KERNEL))


def _increment_r0(asm: I.Assembler) -> None:
    asm.emit(I.ldx(I.DW, I.R1, I.R0, 0), I.alu_imm(I.ADD, I.R1, 1), I.stx(I.DW, I.R0, 0, I.R1))


def build(spec: Spec, offsets: Offsets | None, counts_fd: int, stats_fd: int) -> list[I.Insn]:
    """The program's instructions. offsets may be None only if no skb field is needed."""
    if spec.nargs not in (2, 3, 4):
        raise ValueError(f"kfree_skb has 2, 3 or 4 arguments, not {spec.nargs}")
    needs_skb = spec.need_netns or spec.need_ethertype
    if needs_skb and offsets is None:
        raise ValueError("struct offsets are needed for netns/protocol/port")
    asm = I.Assembler()
    key = lambda field_off: _KEY_OFF + field_off
    asm.emit(I.mov_reg(I.R6, I.R1),          # r6 = ctx
             I.ldx(I.DW, I.R7, I.R6, 0),     # r7 = skb
             # touch the last argument of the variant even if unused: attach then fails
             # (EINVAL) exactly when the kernel's tracepoint has fewer arguments
             I.ldx(I.DW, I.R9, I.R6, 8 * (spec.nargs - 1)),
             I.mov_imm(I.R1, 0),
             I.stx(I.DW, I.FP, key(0), I.R1),
             I.stx(I.DW, I.FP, key(8), I.R1),
             I.stx(I.DW, I.FP, key(16), I.R1))
    if "reason" in spec.by and spec.nargs >= 3:
        asm.emit(I.ldx(I.DW, I.R1, I.R6, 16), I.stx(I.W, I.FP, key(0), I.R1))
    if "location" in spec.by:
        asm.emit(I.ldx(I.DW, I.R1, I.R6, 8), I.stx(I.DW, I.FP, key(8), I.R1))

    if spec.need_netns:
        assert offsets is not None
        # r8 = a socket: rx_sk, else skb->sk; kernel pointers are "negative" on x86_64/arm64
        if spec.nargs >= 4:
            asm.emit(I.ldx(I.DW, I.R8, I.R6, 24))
            asm.jump_imm(I.JSLT, I.R8, 0, "have_sk")
        _probe_read(asm, _SCRATCH, 8, I.R7, offsets.skb_sk)
        asm.emit(I.ldx(I.DW, I.R8, I.FP, _SCRATCH))
        asm.jump_imm(I.JSLT, I.R8, 0, "have_sk")
        _probe_read(asm, _SCRATCH, 8, I.R7, offsets.skb_dev)
        asm.emit(I.ldx(I.DW, I.R8, I.FP, _SCRATCH))
        asm.jump_imm(I.JSGE, I.R8, 0, "netns_done")  # NULL or dev_scratch: unknown
        asm.emit(I.alu_imm(I.ADD, I.R8, offsets.dev_nd_net))
        asm.goto("read_net")
        asm.label("have_sk")
        asm.emit(I.alu_imm(I.ADD, I.R8, offsets.sk_net))
        asm.label("read_net")
        _probe_read(asm, _SCRATCH, 8, I.R8, 0)
        asm.emit(I.ldx(I.DW, I.R8, I.FP, _SCRATCH))
        asm.jump_imm(I.JSGE, I.R8, 0, "netns_done")
        _probe_read(asm, key(4), 4, I.R8, offsets.net_inum)
        asm.label("netns_done")
        if spec.netns is not None:
            asm.emit(I.ldx(I.W, I.R1, I.FP, key(4)))
            asm.jump32_imm(I.JNE, I.R1, spec.netns, "out")
        if "netns" not in spec.by:
            asm.emit(I.st_imm(I.W, I.FP, key(4), 0))

    if spec.need_ethertype:
        assert offsets is not None
        _probe_read(asm, key(16), 2, I.R7, offsets.skb_protocol)
        if spec.ethertype is not None:
            asm.emit(I.ldx(I.H, I.R1, I.FP, key(16)))
            asm.jump_imm(I.JNE, I.R1, be16_as_loaded(spec.ethertype), "out")

    if spec.need_l4:
        assert offsets is not None
        _probe_read(asm, _SCRATCH, 8, I.R7, offsets.skb_head)
        asm.emit(I.ldx(I.DW, I.R8, I.FP, _SCRATCH))          # r8 = skb->head
        _probe_read(asm, _SCRATCH, 2, I.R7, offsets.skb_network_header)
        asm.emit(I.ldx(I.H, I.R9, I.FP, _SCRATCH))           # r9 = network header offset
        asm.jump_imm(I.JEQ, I.R9, 0xFFFF, "l4_done")
        asm.emit(I.alu_reg(I.ADD, I.R9, I.R8), I.ldx(I.H, I.R1, I.FP, key(16)))
        asm.jump_imm(I.JEQ, I.R1, be16_as_loaded(ETH_P_IP), "ipv4")
        asm.jump_imm(I.JNE, I.R1, be16_as_loaded(ETH_P_IPV6), "l4_done")
        asm.emit(I.alu_imm(I.ADD, I.R9, 6))                  # ipv6 nexthdr
        asm.goto("read_l4")
        asm.label("ipv4")
        asm.emit(I.alu_imm(I.ADD, I.R9, 9))                  # iphdr.protocol
        asm.label("read_l4")
        _probe_read(asm, key(18), 1, I.R9, 0)
        if spec.need_port:
            asm.emit(I.ldx(I.B, I.R1, I.FP, key(18)))
            for proto in L4_WITH_PORTS:
                asm.jump_imm(I.JEQ, I.R1, proto, "has_ports")
            asm.goto("l4_done")
            asm.label("has_ports")
            _probe_read(asm, _SCRATCH, 2, I.R7, offsets.skb_transport_header)
            asm.emit(I.ldx(I.H, I.R9, I.FP, _SCRATCH))
            asm.jump_imm(I.JEQ, I.R9, 0xFFFF, "l4_done")
            asm.emit(I.alu_reg(I.ADD, I.R9, I.R8))
            _probe_read(asm, key(20), 2, I.R9, 2)            # tcp/udp/sctp dest port
        asm.label("l4_done")
        if spec.l4 is not None:
            asm.emit(I.ldx(I.B, I.R1, I.FP, key(18)))
            asm.jump_imm(I.JNE, I.R1, spec.l4, "out")
        if spec.port is not None:
            asm.emit(I.ldx(I.H, I.R1, I.FP, key(20)))
            asm.jump_imm(I.JNE, I.R1, be16_as_loaded(spec.port), "out")
        if "proto" not in spec.by:
            asm.emit(I.st_imm(I.B, I.FP, key(18), 0))
        if "port" not in spec.by:
            asm.emit(I.st_imm(I.H, I.FP, key(20), 0))
    if spec.need_ethertype and "proto" not in spec.by:
        asm.emit(I.st_imm(I.H, I.FP, key(16), 0))

    # count: lookup -> increment, else insert 1 (BPF_NOEXIST), else retry lookup, else lost
    for attempt in ("first", "retry"):
        asm.emit(I.ld_map_fd(I.R1, counts_fd), I.mov_reg(I.R2, I.FP), I.alu_imm(I.ADD, I.R2, _KEY_OFF),
                 I.call(I.MAP_LOOKUP_ELEM))
        asm.jump_imm(I.JEQ, I.R0, 0, f"miss_{attempt}")
        _increment_r0(asm)
        asm.goto("out")
        asm.label(f"miss_{attempt}")
        if attempt == "first":
            asm.emit(I.mov_imm(I.R1, 1), I.stx(I.DW, I.FP, _VALUE, I.R1),
                     I.ld_map_fd(I.R1, counts_fd), I.mov_reg(I.R2, I.FP), I.alu_imm(I.ADD, I.R2, _KEY_OFF),
                     I.mov_reg(I.R3, I.FP), I.alu_imm(I.ADD, I.R3, _VALUE), I.mov_imm(I.R4, 1),  # BPF_NOEXIST
                     I.call(I.MAP_UPDATE_ELEM))
            asm.jump_imm(I.JEQ, I.R0, 0, "out")
    asm.emit(I.st_imm(I.W, I.FP, _STATS_KEY, 0),
             I.ld_map_fd(I.R1, stats_fd), I.mov_reg(I.R2, I.FP), I.alu_imm(I.ADD, I.R2, _STATS_KEY),
             I.call(I.MAP_LOOKUP_ELEM))
    asm.jump_imm(I.JEQ, I.R0, 0, "out")
    _increment_r0(asm)
    asm.label("out")
    asm.emit(I.mov_imm(I.R0, 0), I.exit_())
    return asm.assemble()


@dataclass(frozen=True)
class Key:
    reason: int | None
    netns: int
    location: int
    ethertype: int
    l4: int
    port: int


def decode_key(raw: bytes, has_reason: bool) -> Key:
    reason, netns, location, ethertype_be, l4, port_be = KEY.unpack(raw[:KEY_SIZE])
    return Key(reason if has_reason else None, netns, location,
               int.from_bytes(ethertype_be.to_bytes(2, "little"), "big"), l4,
               int.from_bytes(port_be.to_bytes(2, "little"), "big"))
