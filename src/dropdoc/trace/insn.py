"""eBPF instructions: the 8-byte `struct bpf_insn` encoding and a tiny assembler with labels.

    struct bpf_insn { __u8 code; __u8 dst_reg:4, src_reg:4; __s16 off; __s32 imm; };

On little-endian machines (x86_64, aarch64: the only ones dropdoc loads programs on) the
destination register is the low nibble of the second byte. Opcode constants are those of
include/uapi/linux/bpf_common.h and bpf.h; the unit tests compare encodings with the bytes
`bpftool prog dump xlated ... opcodes` and the kernel's own samples show.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# instruction classes
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
# sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}
# modes
IMM, MEM = 0x00, 0x60
# source operand
K, X = 0x00, 0x08
# ALU operations
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0)
# jump operations
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)

PSEUDO_MAP_FD = 1  # src_reg of ld_imm64: imm is a map file descriptor

# registers
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10

# helper ids (enum bpf_func_id)
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, PROBE_READ_KERNEL = 1, 2, 113

_INSN = struct.Struct("<BBhi")


@dataclass(frozen=True)
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF:
            raise ValueError(f"opcode {self.code:#x} out of range")
        if not (0 <= self.dst <= 10 and 0 <= self.src <= 15):
            raise ValueError(f"register out of range (dst={self.dst}, src={self.src})")
        if not -0x8000 <= self.off <= 0x7FFF:
            raise ValueError(f"offset {self.off} does not fit 16 bits")
        if not -0x80000000 <= self.imm <= 0xFFFFFFFF:
            raise ValueError(f"immediate {self.imm} does not fit 32 bits")

    def encode(self) -> bytes:
        imm = self.imm - (1 << 32) if self.imm > 0x7FFFFFFF else self.imm
        return _INSN.pack(self.code, (self.src << 4) | self.dst, self.off, imm)


def decode(data: bytes) -> list[Insn]:
    """The inverse of encode (for tests and dumps)."""
    if len(data) % 8:
        raise ValueError("instruction bytes are not a multiple of 8")
    out = []
    for code, regs, off, imm in _INSN.iter_unpack(data):
        out.append(Insn(code, regs & 0xF, regs >> 4, off, imm))
    return out


# --- single instructions -------------------------------------------------------------------

def mov_imm(dst: int, imm: int) -> Insn:
    return Insn(ALU64 | MOV | K, dst, 0, 0, imm)


def mov_reg(dst: int, src: int) -> Insn:
    return Insn(ALU64 | MOV | X, dst, src)


def alu_imm(op: int, dst: int, imm: int) -> Insn:
    return Insn(ALU64 | op | K, dst, 0, 0, imm)


def alu_reg(op: int, dst: int, src: int) -> Insn:
    return Insn(ALU64 | op | X, dst, src)


def ldx(size: int, dst: int, src: int, off: int) -> Insn:
    """dst = *(size *)(src + off)"""
    return Insn(LDX | size | MEM, dst, src, off)


def stx(size: int, dst: int, off: int, src: int) -> Insn:
    """*(size *)(dst + off) = src"""
    return Insn(STX | size | MEM, dst, src, off)


def st_imm(size: int, dst: int, off: int, imm: int) -> Insn:
    """*(size *)(dst + off) = imm"""
    return Insn(ST | size | MEM, dst, 0, off, imm)


def jmp_imm(op: int, dst: int, imm: int, off: int) -> Insn:
    return Insn(JMP | op | K, dst, 0, off, imm)


def jmp_reg(op: int, dst: int, src: int, off: int) -> Insn:
    return Insn(JMP | op | X, dst, src, off)


def ja(off: int) -> Insn:
    return Insn(JMP | JA, 0, 0, off)


def call(helper: int) -> Insn:
    return Insn(JMP | CALL, 0, 0, 0, helper)


def exit_() -> Insn:
    return Insn(JMP | EXIT)


def ld_imm64(dst: int, value: int, src: int = 0) -> tuple[Insn, Insn]:
    """The two-slot 64-bit load; src=PSEUDO_MAP_FD makes `value` a map fd."""
    value &= (1 << 64) - 1
    return (Insn(LD | DW | IMM, dst, src, 0, value & 0xFFFFFFFF), Insn(0, 0, 0, 0, value >> 32))


def ld_map_fd(dst: int, fd: int) -> tuple[Insn, Insn]:
    return ld_imm64(dst, fd, PSEUDO_MAP_FD)


# --- assembler with labels ------------------------------------------------------------------

@dataclass
class _Jump:
    index: int
    label: str


class Assembler:
    """Appends instructions; jumps name a label resolved by `assemble()`.

    Jump offsets count instructions (8-byte slots) after the jump, so ld_imm64 counts as
    two. A label may be placed before or after its jumps; an unknown label is an error.
    """

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.labels: dict[str, int] = {}
        self.jumps: list[_Jump] = []

    def emit(self, *insns: Insn | tuple[Insn, Insn]) -> Assembler:
        for item in insns:
            if isinstance(item, tuple):
                self.insns.extend(item)
            else:
                self.insns.append(item)
        return self

    def label(self, name: str) -> None:
        if name in self.labels:
            raise ValueError(f"label {name} placed twice")
        self.labels[name] = len(self.insns)

    def jump_imm(self, op: int, dst: int, imm: int, label: str) -> None:
        self.jumps.append(_Jump(len(self.insns), label))
        self.insns.append(jmp_imm(op, dst, imm, 0))

    def jump32_imm(self, op: int, dst: int, imm: int, label: str) -> None:
        """Compare the low 32 bits (BPF_JMP32, kernel >= 5.1): an immediate is sign-extended
        in 64-bit jumps, so u32 values >= 2**31 (netns inodes) need this."""
        self.jumps.append(_Jump(len(self.insns), label))
        self.insns.append(Insn(JMP32 | op | K, dst, 0, 0, imm))

    def jump_reg(self, op: int, dst: int, src: int, label: str) -> None:
        self.jumps.append(_Jump(len(self.insns), label))
        self.insns.append(jmp_reg(op, dst, src, 0))

    def goto(self, label: str) -> None:
        self.jumps.append(_Jump(len(self.insns), label))
        self.insns.append(ja(0))

    def assemble(self) -> list[Insn]:
        out = list(self.insns)
        for jump in self.jumps:
            if jump.label not in self.labels:
                raise ValueError(f"jump to unknown label {jump.label}")
            target = self.labels[jump.label]
            insn = out[jump.index]
            out[jump.index] = Insn(insn.code, insn.dst, insn.src, target - jump.index - 1, insn.imm)
        return out


def encode_program(insns: list[Insn]) -> bytes:
    return b"".join(insn.encode() for insn in insns)
