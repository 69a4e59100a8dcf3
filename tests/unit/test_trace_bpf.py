"""The bpf(2) loader's pure parts: possible-CPU lists, syscall numbers, verifier log line."""

from __future__ import annotations

import errno

import pytest

from dropdoc.errors import ParseError
from dropdoc.trace import bpf


def test_cpu_lists():
    assert bpf.parse_cpu_list("0-1\n") == [0, 1]
    assert bpf.parse_cpu_list("0-3,5,7-8") == [0, 1, 2, 3, 5, 7, 8]
    assert bpf.parse_cpu_list("0") == [0]
    for bad in ("", "a", "3-1", "-1", "0-", "1,,2"):
        with pytest.raises(ParseError):
            bpf.parse_cpu_list(bad)


def test_per_cpu_values_need_one_slot_per_possible_cpu(tmp_path):
    path = tmp_path / "possible"
    path.write_text("0-3,6\n")  # a hole: CPU 6 exists, 4 and 5 do not -> 7 slots
    assert bpf.possible_cpus(str(path)) == 7


def test_syscall_numbers():
    assert bpf.syscall_number("x86_64") == 321
    assert bpf.syscall_number("aarch64") == 280
    with pytest.raises(OSError) as info:
        bpf.syscall_number("sparc64")
    assert info.value.errno == errno.ENOSYS


def test_verifier_log_in_one_line():
    exc = bpf.BpfError(errno.EACCES, "BPF_PROG_LOAD x", "0: (bf) r6 = r1\n1: (79) r7 = *(u64 *)(r6 +64)\n"
                       "invalid bpf_context access off=64 size=8\nprocessed 2 insns\n\n")
    assert exc.log_line() == "invalid bpf_context access off=64 size=8"
    assert bpf.BpfError(errno.EPERM, "x").log_line() == ""
