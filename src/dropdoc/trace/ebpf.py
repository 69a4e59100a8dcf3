"""The built-in eBPF backend: a generated raw-tracepoint program counting kfree_skb in a
per-CPU hash map, read from Python. No compiler, no headers, no bpftrace: struct offsets
come from BTF, instructions from program.py, loading from bpf.py."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from ..errors import DropdocError, NeedsPrivilege, ParseError, SourceUnavailable
from . import bpf, program
from . import btf as btf_mod
from . import reasons as reasons_mod
from .backend import attach_timed

PROG_NAME = "dropdoc_kfree"
COUNTS_MAP = "dropdoc_drops"
STATS_MAP = "dropdoc_lost"
MAX_KEYS = 16384
TRACEPOINT = "kfree_skb"
LOG_DIR = "/tmp"


class VerifierRejected(DropdocError):
    """The kernel's verifier refused the generated program (a dropdoc bug or a kernel quirk)."""


@dataclass
class BpfBackend:
    spec: program.Spec
    btf_path: str = "/sys/kernel/btf/vmlinux"
    name: str = "bpf"
    variant: str = ""
    reasons: reasons_mod.ReasonNames = field(default_factory=reasons_mod.ReasonNames)
    warnings: list[str] = field(default_factory=list)
    startup_ms: float | None = None
    prog_fd: int = -1
    link_fd: int = -1
    counts: bpf.Map | None = None
    stats: bpf.Map | None = None
    object_ids: dict[str, int] = field(default_factory=dict)
    nargs: int = 0
    verifier_log: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def attach(self) -> None:
        self.startup_ms = attach_timed(self._attach, self.close)

    def _attach(self) -> None:
        try:
            bpf.syscall_number()
        except OSError as exc:
            raise SourceUnavailable(str(exc.strerror)) from None
        kernel_btf = None
        try:
            kernel_btf = btf_mod.read_vmlinux(self.btf_path)
            kernel_btf.prefetch(("sk_buff", "net_device", "sock_common", "net", "skb_drop_reason",
                                 "skb_drop_reason_subsys"))
        except (SourceUnavailable, NeedsPrivilege, ParseError) as exc:
            self.warnings.append(f"no usable kernel BTF ({exc})")
        offsets = None
        needs_offsets = self.spec.need_netns or self.spec.need_ethertype
        if kernel_btf is not None:
            self.reasons = self._reason_names(kernel_btf)
            if needs_offsets:
                offsets = program.Offsets.from_btf(kernel_btf)
        if needs_offsets and offsets is None:
            raise SourceUnavailable("netns/protocol/port need the kernel's BTF (/sys/kernel/btf/vmlinux)")
        try:
            self.counts = bpf.create_map(bpf.MAP_TYPE_PERCPU_HASH, program.KEY_SIZE, 8, MAX_KEYS, COUNTS_MAP)
            self.stats = bpf.create_map(bpf.MAP_TYPE_PERCPU_ARRAY, 4, 8, 1, STATS_MAP)
        except bpf.BpfError as exc:
            raise _translate(exc) from None
        self.object_ids["map:" + COUNTS_MAP] = bpf.object_id(self.counts.fd)
        self.object_ids["map:" + STATS_MAP] = bpf.object_id(self.stats.fd)
        # Argument-count variants, newest first: attaching a program that reads an argument
        # the tracepoint lacks fails with EINVAL. rx_sk (4th) only matters for the netns.
        variants = (4, 3, 2) if self.spec.need_netns else (3, 2)
        last: bpf.BpfError | None = None
        for nargs in variants:
            spec = program.Spec(nargs, self.spec.by, self.spec.netns, self.spec.ethertype,
                                self.spec.l4, self.spec.port)
            insns = program.build(spec, offsets, self.counts.fd, self.stats.fd)
            try:
                prog_fd = bpf.load_program(insns, PROG_NAME)
            except bpf.BpfError as exc:
                if exc.log:
                    self.verifier_log = _save_log(exc.log)
                    raise VerifierRejected(f"the kernel verifier rejected the tracer: {exc.log_line()} "
                                           f"(full log: {self.verifier_log})") from None
                raise _translate(exc) from None
            try:
                link_fd = bpf.raw_tracepoint_open(TRACEPOINT, prog_fd)
            except bpf.BpfError as exc:
                os.close(prog_fd)
                last = exc
                if exc.errno == errno.EINVAL:
                    continue
                raise _translate(exc) from None
            self.prog_fd, self.link_fd, self.nargs = prog_fd, link_fd, nargs
            self.object_ids["prog:" + PROG_NAME] = bpf.object_id(prog_fd)
            self.variant = {4: "skb,location,reason,rx_sk", 3: "skb,location,reason",
                            2: "skb,location (no drop reasons before 5.17)"}[nargs]
            return
        assert last is not None
        raise SourceUnavailable(f"raw tracepoint {TRACEPOINT} accepts none of the known argument lists "
                                f"({last})")

    @staticmethod
    def _reason_names(kernel_btf: btf_mod.Btf) -> reasons_mod.ReasonNames:
        try:
            core = kernel_btf.enum("skb_drop_reason")
        except ParseError:
            return reasons_mod.ReasonNames()
        try:
            subsys = kernel_btf.enum("skb_drop_reason_subsys")
        except ParseError:
            subsys = {}
        return reasons_mod.from_btf_enums(core, subsys)

    def read(self) -> tuple[dict[tuple, int], int | None]:
        """Cumulative counts since attach by raw key, and events lost (map full)."""
        if self.counts is None or self.stats is None:
            return {}, None
        has_reason = self.nargs >= 3 and "reason" in self.spec.by
        out: dict[tuple, int] = {}
        for raw in self.counts.keys():
            total = self.counts.sum_u64(raw)
            if total is None:
                continue
            key = program.decode_key(raw, has_reason)
            out[(key.reason, key.location, key.ethertype, key.l4, key.port, key.netns)] = total
        lost = self.stats.sum_u64(b"\0\0\0\0") or 0
        return out, lost

    def stop(self) -> None:
        """Detach from the tracepoint (counting stops; the maps stay readable)."""
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1

    def close(self) -> None:
        self.stop()
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1
        for m in (self.counts, self.stats):
            if m is not None:
                m.close()

    @property
    def has_reasons(self) -> bool:
        return self.nargs >= 3


def _translate(exc: bpf.BpfError) -> DropdocError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        if os.geteuid() != 0:
            return NeedsPrivilege(f"{exc.what}: {exc.strerror} (run as root: BPF needs CAP_BPF+CAP_PERFMON)")
        return SourceUnavailable(f"{exc.what}: {exc.strerror} (BPF disabled or kernel lockdown)")
    if exc.errno == errno.ENOSYS:
        return SourceUnavailable(f"{exc.what}: this kernel has no bpf(2)")
    if exc.errno == errno.ENOENT:
        return SourceUnavailable(f"{exc.what}: no such tracepoint in this kernel")
    return SourceUnavailable(f"{exc.what}: {exc.strerror}")


def _save_log(log: str) -> str:
    path = os.path.join(LOG_DIR, f"dropdoc-verifier-{os.getpid()}.log")
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(log)
    except OSError:
        return "(could not be saved)"
    return path
