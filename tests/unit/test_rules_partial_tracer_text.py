"""The tracer's error text names the failing bpf(2) command once (it used to say
"BPF_MAP_CREATE dropdoc_drops: BPF_MAP_CREATE dropdoc_drops: Operation not permitted")."""

from __future__ import annotations

import errno

import pytest

from dropdoc.trace import bpf, ebpf


@pytest.mark.parametrize("err", [errno.EPERM, errno.EINVAL, errno.ENOENT, errno.E2BIG])
def test_translated_bpf_error_names_the_command_once(err):
    exc = bpf.BpfError(err, "BPF_MAP_CREATE dropdoc_drops")
    text = str(ebpf._translate(exc))
    assert text.count("BPF_MAP_CREATE dropdoc_drops") == 1, text


def test_bpf_error_text_and_strerror():
    exc = bpf.BpfError(errno.EPERM, "BPF_PROG_LOAD dropdoc_kfree")
    assert exc.strerror == "Operation not permitted"  # the bare OS message, as on any OSError
    assert str(exc) == "BPF_PROG_LOAD dropdoc_kfree: Operation not permitted"
