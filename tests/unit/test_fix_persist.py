"""Persisting kept sysctl changes in one sysctl.d file (never /etc/sysctl.conf), skipping
what sysctl.d cannot persist with the reason, and undoing it on rollback. The file is
loaded by a real `sysctl --system` in tests/functional/test_fix.py."""

from __future__ import annotations

import re

import pytest

from dropdoc.fix.apply import Applied
from dropdoc.fix.changes import SysctlChange, TxQueueLenChange
from dropdoc.fix.journal import Journal
from dropdoc.fix.persist import PersistRefused, check_path, merge, parse_file, persist, undo_persist
from dropdoc.fix.plan import PlannedChange

LABELS = {"tcp.listen_overflow": "tcp.listen_overflow (1214 drops, 242.8/s)"}


def kept(change, old, verdict="verified", finding="tcp.listen_overflow") -> Applied:
    planned = PlannedChange(change, [finding], change.value)
    return Applied(planned, 1, old, in_force=change.value, verdict=verdict)


def test_refuses_sysctl_conf_and_files_sysctl_would_not_read(tmp_path):
    with pytest.raises(PersistRefused, match="never edits /etc/sysctl.conf"):
        check_path("/etc/sysctl.conf")
    with pytest.raises(PersistRefused, match="only reads files ending in .conf"):
        check_path(str(tmp_path / "90-dropdoc"))
    check_path(str(tmp_path / "90-dropdoc.conf"))


def test_writes_one_commented_line_per_key(tmp_path):
    path = tmp_path / "sysctl.d" / "90-dropdoc.conf"
    journal = Journal(None, run_id="20261126T000000-abcdef")
    result = persist([kept(SysctlChange(None, 2048, key="net.core.somaxconn"), 128),
                      kept(SysctlChange(None, (4096, 262144, 6291456), key="net.ipv4.tcp_rmem"),
                           (4096, 131072, 6291456), verdict="pending")],
                     str(path), journal, LABELS)
    text = path.read_text()
    assert [e.key for e in result.written] == ["net.core.somaxconn", "net.ipv4.tcp_rmem"]
    lines = text.splitlines()
    assert lines[0].startswith("# Written by `dropdoc fix --persist`")
    assert "net.core.somaxconn = 2048" in lines and "net.ipv4.tcp_rmem = 4096 262144 6291456" in lines
    comment = lines[lines.index("net.core.somaxconn = 2048") - 1]
    assert re.fullmatch(r"# dropdoc: tcp\.listen_overflow \(1214 drops, 242\.8/s\); \d{4}-\d\d-\d\d; "
                        r"run 20261126T000000-abcdef; was 128; verified", comment)
    assert lines[lines.index("net.ipv4.tcp_rmem = 4096 262144 6291456") - 1].endswith("pending restart")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    record = journal.records()[-1]
    assert record["event"] == "persist" and record["previous"] == {"net.core.somaxconn": None,
                                                                   "net.ipv4.tcp_rmem": None}


def test_named_namespace_and_link_changes_are_skipped_with_the_reason(tmp_path):
    path = tmp_path / "90-dropdoc.conf"
    result = persist([kept(SysctlChange("ddlab-x-srv", 2048, key="net.core.somaxconn"), 16),
                      kept(TxQueueLenChange(None, 2000, interface="eth0"), 1000)],
                     str(path), Journal(None), LABELS)
    assert result.written == [] and not path.exists()
    assert "network namespace ddlab-x-srv" in result.skipped[0]
    assert "applied at boot to the host namespace only" in result.skipped[0]
    assert "ip netns exec ddlab-x-srv sysctl -w net.core.somaxconn=2048" in result.skipped[0]
    assert "not a sysctl" in result.skipped[1] and "systemd-networkd" in result.skipped[1]


FOREIGN = """# local tuning, keep
vm.swappiness = 10
# dropdoc: tcp.listen_overflow (9 drops, 1.8/s); 2026-01-01; run old; was 128; verified
net.core.somaxconn = 1024
; a comment in the other style
net.ipv4.tcp_syncookies=1
"""


def test_merge_replaces_our_entry_and_keeps_everything_else():
    from dropdoc.fix.persist import Entry

    text, previous = merge(FOREIGN, [Entry("net.core.somaxconn", "4096", ["# dropdoc: new"])])
    assert "vm.swappiness = 10" in text and "# local tuning, keep" in text
    assert "; a comment in the other style" in text and "\nnet.ipv4.tcp_syncookies=1\n" in text  # verbatim
    assert "net.core.somaxconn = 1024" not in text and "run old" not in text
    assert text.endswith("# dropdoc: new\nnet.core.somaxconn = 4096\n")
    assert previous["net.core.somaxconn"].startswith("# dropdoc: tcp.listen_overflow (9 drops")


def test_parse_keeps_lines_and_attaches_only_dropdoc_comments():
    items = parse_file(FOREIGN)
    entries = [i for i in items if not isinstance(i, str)]
    assert [(e.key, e.value) for e in entries] == [("vm.swappiness", "10"), ("net.core.somaxconn", "1024"),
                                                   ("net.ipv4.tcp_syncookies", "1")]
    assert entries[0].comments == [] and entries[1].comments[0].startswith("# dropdoc:")


def test_undo_puts_back_the_replaced_entry_or_removes_ours(tmp_path):
    path = tmp_path / "90-dropdoc.conf"
    path.write_text(FOREIGN)
    journal = Journal(None)
    persist([kept(SysctlChange(None, 4096, key="net.core.somaxconn"), 1024),
             kept(SysctlChange(None, 8192, key="net.ipv4.tcp_max_syn_backlog"), 2048)],
            str(path), journal, LABELS)
    assert "net.core.somaxconn = 4096" in path.read_text()
    messages = undo_persist(journal.records()[-1], journal)
    # the same lines as before (the replaced entry returns at the end of the file)
    assert sorted(path.read_text().splitlines()) == sorted(FOREIGN.splitlines())
    assert path.read_text().endswith("run old; was 128; verified\nnet.core.somaxconn = 1024\n")
    assert any("back to the entry it replaced" in m for m in messages)
    assert any("net.ipv4.tcp_max_syn_backlog removed" in m for m in messages)


def test_undo_leaves_an_entry_changed_since(tmp_path):
    path = tmp_path / "90-dropdoc.conf"
    journal = Journal(None)
    persist([kept(SysctlChange(None, 4096, key="net.core.somaxconn"), 1024)], str(path), journal, LABELS)
    path.write_text(path.read_text().replace("= 4096", "= 8192"))
    messages = undo_persist(journal.records()[-1], journal)
    assert "net.core.somaxconn = 8192" in path.read_text()
    assert "changed since dropdoc wrote it" in messages[0]


def test_undo_removes_the_file_when_nothing_is_left(tmp_path):
    path = tmp_path / "90-dropdoc.conf"
    journal = Journal(None)
    persist([kept(SysctlChange(None, 4096, key="net.core.somaxconn"), 1024)], str(path), journal, LABELS)
    undo_persist(journal.records()[-1], journal)
    assert not path.exists()
