"""BPF instruction encoding against known bytes (the ISA's own examples and what the
kernel's verifier hands back for our program: `bpftool prog dump xlated ... opcodes`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dropdoc.trace import insn as I
from dropdoc.trace import program

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trace"


@pytest.mark.parametrize("instruction, hexbytes", [
    (I.mov_imm(I.R0, 0), "b700000000000000"),
    (I.exit_(), "9500000000000000"),
    (I.mov_reg(I.R6, I.R1), "bf16000000000000"),
    (I.ldx(I.DW, I.R7, I.R6, 0), "7967000000000000"),
    (I.ldx(I.W, I.R1, I.R10, -20), "61a1ecff00000000"),
    (I.ldx(I.H, I.R1, I.R10, -8), "69a1f8ff00000000"),
    (I.ldx(I.B, I.R1, I.R10, -6), "71a1faff00000000"),
    (I.stx(I.DW, I.FP, -8, I.R1), "7b1af8ff00000000"),
    (I.stx(I.W, I.FP, -24, I.R1), "631ae8ff00000000"),
    (I.st_imm(I.W, I.FP, -4, 0), "620afcff00000000"),
    (I.st_imm(I.H, I.FP, -4, 0), "6a0afcff00000000"),
    (I.alu_imm(I.ADD, I.R2, -8), "07020000f8ffffff"),
    (I.alu_reg(I.ADD, I.R9, I.R8), "0f89000000000000"),
    (I.call(I.MAP_LOOKUP_ELEM), "8500000001000000"),
    (I.call(I.PROBE_READ_KERNEL), "8500000071000000"),
    (I.jmp_imm(I.JEQ, I.R0, 0, 2), "1500020000000000"),
    (I.jmp_imm(I.JSLT, I.R8, 0, 18), "c508120000000000"),
    (I.jmp_imm(I.JSGE, I.R8, 0, 3), "7508030000000000"),
    (I.jmp_imm(I.JNE, I.R1, 0x0008, 5), "5501050008000000"),
    (I.ja(-1), "0500ffff00000000"),
])
def test_known_encodings(instruction, hexbytes):
    assert instruction.encode().hex() == hexbytes


def test_ld_imm64_map_fd_is_two_slots_with_pseudo_src():
    first, second = I.ld_map_fd(I.R1, 4)
    assert (first.encode() + second.encode()).hex() == "1811000004000000" + "0000000000000000"
    lo, hi = I.ld_imm64(I.R2, 0x1122334455667788)
    assert lo.encode().hex() == "1802000088776655" and hi.encode().hex() == "0000000044332211"


def test_u32_immediates_above_2_31_keep_their_bits():
    # netns inodes are > 2**31: the encoder must store the same 32 bits
    assert I.Insn(0x56, 1, 0, 3, 4026532177).encode()[4:] == (4026532177).to_bytes(4, "little")
    assert I.Insn(0x56, 1, 0, 3, 4026532177).encode()[4:] == I.Insn(0x56, 1, 0, 3, 4026532177 - (1 << 32)).encode()[4:]


def test_decode_is_the_inverse_of_encode():
    insns = [I.mov_reg(I.R6, I.R1), *I.ld_map_fd(I.R1, 7), I.jmp_imm(I.JNE, I.R1, 5, -3), I.exit_()]
    decoded = I.decode(I.encode_program(insns))
    assert [d.encode() for d in decoded] == [i.encode() for i in insns]
    with pytest.raises(ValueError):
        I.decode(b"\0" * 7)


@pytest.mark.parametrize("kwargs", [dict(code=0x100), dict(code=0xb7, dst=11), dict(code=0x05, off=1 << 15),
                                    dict(code=0xb7, imm=1 << 32), dict(code=0xb7, src=16)])
def test_out_of_range_fields_are_refused(kwargs):
    with pytest.raises(ValueError):
        I.Insn(**kwargs)


def test_assembler_resolves_forward_and_backward_labels():
    asm = I.Assembler()
    asm.label("top")
    asm.jump_imm(I.JEQ, I.R1, 0, "end")    # 0 -> 4: off 3
    asm.emit(*I.ld_map_fd(I.R1, 3))         # 1, 2 (two slots)
    asm.goto("top")                         # 3 -> 0: off -4
    asm.label("end")
    asm.emit(I.exit_())
    insns = asm.assemble()
    assert insns[0].off == 3 and insns[3].off == -4
    with pytest.raises(ValueError):
        asm.label("end")
    bad = I.Assembler()
    bad.goto("nowhere")
    with pytest.raises(ValueError):
        bad.assemble()


def test_jump32_compares_low_32_bits():
    asm = I.Assembler()
    asm.jump32_imm(I.JNE, I.R1, 4026532177, "out")
    asm.label("out")
    (insn,) = asm.assemble()
    assert insn.code == I.JMP32 | I.JNE | I.K == 0x56


def _xlated(path: Path) -> list[tuple[int, bytes]]:
    """`bpftool prog dump xlated opcodes` -> [(index, 8 bytes)]."""
    out, index = [], None
    for line in path.read_text().splitlines():
        head = re.match(r"^\s*(\d+): \(", line)
        if head:
            index = int(head.group(1))
            continue
        if index is not None and re.match(r"^\s+([0-9a-f]{2} ){7,15}[0-9a-f]{2}\s*$", line):
            raw = bytes.fromhex(line.replace(" ", ""))
            out.extend((index + i, raw[i * 8:i * 8 + 8]) for i in range(len(raw) // 8))  # ld_imm64: 2
            index = None
    return out


def test_generated_program_matches_what_the_kernel_loaded():
    """The captured xlated dump of the program built for (reason, location, netns filter)
    on the capture machine: every instruction up to the first map access (where the
    verifier starts rewriting: map fd -> address, lookups inlined) must be byte-identical;
    helper calls have their id rewritten to an address and jumps past that point have
    longer offsets, so only their other fields are compared."""
    expected = json.loads((FIXTURES / "vmlinux_subset_6.18.expected.json").read_text())
    offsets = program.Offsets(**expected["offsets"])
    spec = program.Spec(nargs=4, by=frozenset({"reason", "location", "netns"}), netns=4026532177)
    ours = program.build(spec, offsets, 3, 4)
    kernel = _xlated(FIXTURES / "xlated_reason_location_netns_6.18.txt")
    assert len(kernel) > 60
    boundary = next(index for index, raw in kernel if raw[0] == 0x18)
    compared = 0
    for index, raw in kernel[:boundary]:
        mine = ours[index].encode()
        if raw[0] == 0x85:
            assert mine[:4] == raw[:4], index
        elif raw[0] & 0x07 in (I.JMP, I.JMP32) and index + ours[index].off + 1 >= boundary:
            # a jump into the rewritten part: its offset grew with the inlined lookups
            assert mine[:2] + mine[4:] == raw[:2] + raw[4:], index
        else:
            assert mine == raw, f"instruction {index}: ours {mine.hex()} kernel {raw.hex()}"
        compared += 1
    assert compared >= 40
