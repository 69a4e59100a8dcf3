"""Making kept sysctl changes survive a reboot: one file in /etc/sysctl.d.

dropdoc owns one file (default /etc/sysctl.d/90-dropdoc.conf): each entry is a
`key = value` line with a `# dropdoc:` comment above it naming the finding, the date and
the run. Writing merges (newest entry per key wins, foreign lines are kept verbatim) and
replaces the file atomically. /etc/sysctl.conf is never edited.

What cannot be persisted this way is skipped with the reason: values of a named network
namespace (sysctl.d is applied at boot to the host namespace only), and link settings
(txqueuelen, qdisc limits, rings belong to the interface's own configuration).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import DropdocError, translated
from . import sysctl as sysctl_mod
from .apply import Applied
from .changes import SysctlChange
from .journal import Journal

DEFAULT_PATH = "/etc/sysctl.d/90-dropdoc.conf"
HEADER = ("# Written by `dropdoc fix --persist`: sysctls whose change was verified (or is pending an\n"
          "# application restart). Undo with `dropdoc fix --rollback`. One entry per key.\n")
_ENTRY = re.compile(r"^\s*([A-Za-z0-9_.*/-]+)\s*=\s*(.*?)\s*$")


class PersistRefused(DropdocError):
    """The persist file is not one dropdoc may write."""


@dataclass
class Entry:
    key: str
    value: str
    comments: list[str] = field(default_factory=list)
    raw: str | None = None  # the line as found in the file (kept verbatim)

    def text(self) -> str:
        line = self.raw if self.raw is not None else f"{self.key} = {self.value}"
        return "".join(f"{c}\n" for c in self.comments) + f"{line}\n"


@dataclass
class PersistResult:
    path: str
    written: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "written": {e.key: e.value for e in self.written}, "skipped": self.skipped}


def check_path(path: str) -> None:
    real = os.path.realpath(path)
    if real == os.path.realpath("/etc/sysctl.conf"):
        raise PersistRefused("dropdoc never edits /etc/sysctl.conf: persist to a file in /etc/sysctl.d")
    if not path.endswith(".conf"):
        raise PersistRefused(f"{path}: `sysctl --system` only reads files ending in .conf")


def parse_file(text: str) -> list[str | Entry]:
    """Lines of a sysctl.d file; `key = value` lines with the `# dropdoc:` comments right
    above them become Entries, everything else stays a verbatim line."""
    items: list[str | Entry] = []
    comments: list[str] = []
    for line in text.splitlines():
        if line.startswith("# dropdoc:"):
            comments.append(line)
            continue
        match = _ENTRY.match(line) if not line.lstrip().startswith(("#", ";")) else None
        if match:
            items.append(Entry(match.group(1).replace("/", "."), match.group(2), comments, raw=line))
            comments = []
            continue
        items.extend(comments)
        comments = []
        items.append(line)
    items.extend(comments)
    return items


def render(items: list[str | Entry]) -> str:
    return "".join(item.text() if isinstance(item, Entry) else f"{item}\n" for item in items)


def merge(text: str, entries: list[Entry]) -> tuple[str, dict[str, str | None]]:
    """New file text with `entries` replacing any entry of the same key; also the previous
    entry text per key (None: the key was not in the file), for undo."""
    items = parse_file(text) if text.strip() else [HEADER.rstrip("\n")]
    keys = {e.key for e in entries}
    previous: dict[str, str | None] = dict.fromkeys(keys)
    kept: list[str | Entry] = []
    for item in items:
        if isinstance(item, Entry) and item.key in keys:
            previous[item.key] = item.text()
            continue
        kept.append(item)
    return render(kept + list(entries)), previous


def read_text(path: str) -> str:
    if not os.path.exists(path):
        return ""
    with translated(path):
        with open(path, encoding="utf-8") as handle:
            return handle.read()


def write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    with translated(directory):
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".dropdoc-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def entry_for(applied: Applied, run_id: str, finding_text: str, today: str | None = None) -> Entry:
    change = applied.change
    assert isinstance(change, SysctlChange)
    today = today or time.strftime("%Y-%m-%d")
    status = "pending restart" if applied.verdict == "pending" else applied.verdict or "applied"
    comment = (f"# dropdoc: {finding_text}; {today}; run {run_id}; was {sysctl_mod.format_value(applied.old)}; "
               f"{status}")
    return Entry(change.key, sysctl_mod.format_value(applied.planned.proposed), [comment])


def persist(kept: list[Applied], path: str, journal: Journal, finding_text: dict[str, str]) -> PersistResult:
    """Write the kept host-namespace sysctl changes to `path`; skip the rest with the reason."""
    check_path(path)
    result = PersistResult(path)
    entries = []
    for applied in kept:
        change = applied.change
        if not isinstance(change, SysctlChange):
            result.skipped.append(f"{change.target}: not a sysctl; make it part of the interface's own "
                                  "configuration (systemd-networkd .link/.network, ifupdown post-up, udev)")
            continue
        if change.netns is not None:
            result.skipped.append(f"{change.key} in network namespace {change.netns}: sysctl.d is applied at "
                                  "boot to the host namespace only; set it where the namespace is created "
                                  f"({change.command()})")
            continue
        text = "; ".join(finding_text.get(f, f) for f in applied.planned.findings)
        entries.append(entry_for(applied, journal.run_id, text))
    if not entries:
        return result
    new_text, previous = merge(read_text(path), entries)
    journal.write("persist", path=path, keys=[e.key for e in entries], previous=previous,
                  written={e.key: e.text() for e in entries})
    write_atomic(path, new_text)
    result.written = entries
    return result


def undo_persist(record: dict[str, Any], journal: Journal) -> list[str]:
    """Put back the entries a persist record replaced (only where the file still has ours)."""
    path = record.get("path")
    written: dict[str, str] = record.get("written") or {}
    previous: dict[str, str | None] = record.get("previous") or {}
    if not path or not written:
        return []
    text = read_text(path)
    items = parse_file(text)
    messages, changed = [], False
    out: list[str | Entry] = []
    for item in items:
        if isinstance(item, Entry) and item.key in written:
            if item.text() != written[item.key]:
                messages.append(f"{path}: {item.key} was changed since dropdoc wrote it; left alone")
                out.append(item)
                continue
            changed = True
            before = previous.get(item.key)
            if before:
                out.extend(parse_file(before))
                messages.append(f"{path}: {item.key} back to the entry it replaced")
            else:
                messages.append(f"{path}: {item.key} removed")
            continue
        out.append(item)
    if changed:
        remaining = [i for i in out if isinstance(i, Entry)]
        if remaining:
            write_atomic(path, render(out))
        else:
            with translated(path):
                os.unlink(path)
            messages.append(f"{path}: removed (no entry left)")
        journal.write("persist-undone", path=path, keys=list(written))
    return messages
