"""The few errors dropdoc raises, and the one place OS errors are translated.

Every message is one line a user can act on; the CLI prints it without a traceback.
"""

from __future__ import annotations

import errno
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


def read_text(path: str) -> str:
    """Read a small kernel file as text; OS errors become dropdoc errors."""
    with translated(path):
        with open(path, "rb") as handle:
            data = handle.read()
    return data.decode("utf-8", errors="replace")
