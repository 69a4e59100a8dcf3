"""The few errors dropdoc raises, and the one place OS errors are translated.

Every message is one line a user can act on; the CLI prints it without a traceback.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Iterator


class DropdocError(Exception):
    """Base class: the message is shown to the user as one line."""


class SourceUnavailable(DropdocError):
    """The data does not exist here (file missing, kernel too old, feature off)."""


class NeedsPrivilege(DropdocError):
    """The data exists but this user may not read it (usually: run as root)."""


class ParseError(DropdocError):
    """The data was read but does not have the expected format."""


class UnknownNetns(DropdocError):
    """--netns names a namespace that does not exist."""


_PRIVILEGE_ERRNOS = {errno.EACCES, errno.EPERM}


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn OSError raised while reading `what` into a dropdoc error."""
    try:
        yield
    except OSError as exc:
        raise from_os_error(exc, what) from exc


def from_os_error(exc: OSError, what: str) -> DropdocError:
    reason = exc.strerror or str(exc)
    if exc.errno in _PRIVILEGE_ERRNOS:
        return NeedsPrivilege(f"{what}: {reason} (run as root)")
    return SourceUnavailable(f"{what}: {reason}")


_CHUNK = 65536


def _whole_in_one_read(path: str) -> bool:
    # Only sysctls and sysfs class attributes: tracefs/debugfs under /sys and the rest of
    # /proc have seq_files larger than one read.
    return "/proc/sys/" in path or "/sys/class/" in path


def read_text(path: str) -> str:
    """Read a small kernel file as text; OS errors become dropdoc errors.

    os.open/os.read rather than open(): a snapshot reads ~100 small files and open()
    adds a buffered file object, an fstat and an isatty ioctl to each (~5 us of ~13).
    A sysctl (/proc/sys) or sysfs attribute (/sys/class) is produced whole by one read,
    so a short first read is all of it; other files (seq_file: a page per read) are read
    until EOF."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = [os.read(fd, _CHUNK)]
            if len(chunks[0]) == _CHUNK or not _whole_in_one_read(path):
                while chunks[-1]:
                    chunks.append(os.read(fd, _CHUNK))
        finally:
            os.close(fd)
    except OSError as exc:
        raise from_os_error(exc, path) from exc
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return data.decode("utf-8", errors="replace")
