"""Writing a report or page where the user asked: a file (atomically), standard output,
or a device or pipe. The one place that turns `-o PATH` into bytes on disk."""

from __future__ import annotations

import os
import stat
import sys
import tempfile

from ..errors import DropdocError


class OutputError(DropdocError):
    """The report could not be written."""


def write_text(path: str, text: str) -> None:
    """Write `text` to `path`: "-" is standard output; a regular file (new or existing)
    is replaced atomically, so a failed run never leaves half a report; a symlink is
    followed (the link stays); a device or FIFO (/dev/stdout, a named pipe) is written
    to, never replaced by a file."""
    if path == "-":
        write_stdout(text)
        return
    try:
        mode = os.stat(path).st_mode     # through symlinks: /dev/stdout is a link to a pipe
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(f"cannot write {path}: it is a directory")
    if mode is not None and not stat.S_ISREG(mode):
        _write_in_place(path, text)
        return
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise OutputError(f"cannot write {path}: directory {os.path.dirname(path) or directory} does not exist")
    _replace(path, target, text, 0o644 if mode is None else stat.S_IMODE(mode))


def _write_in_place(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _replace(path: str, target: str, text: str, mode: int) -> None:
    """Write next to the target and rename over it."""
    try:
        fd, temporary = tempfile.mkstemp(prefix=".dropdoc-", dir=os.path.dirname(target))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_stdout(text: str) -> None:
    """Standard output, as UTF-8 whatever the locale says (the report is a UTF-8 document),
    all of it: a full disk or a closed stdout is a one-line error; a reader that went away
    (`| head`) ends the program quietly, as SIGPIPE would."""
    stream = sys.stdout
    if stream is None:
        raise OutputError("cannot write to standard output: it is closed")
    try:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):   # not a file (a test's capture): its own write
            stream.write(text)
            stream.flush()
            return
        stream.flush()
        # os.write until all is written: with PYTHONUNBUFFERED a text stream writes once and
        # drops what a pipe did not take.
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data):]
    except BrokenPipeError:
        _discard(stream)
        raise SystemExit(141) from None
    except (OSError, ValueError) as exc:   # ValueError: a closed file
        _discard(stream)
        raise OutputError(f"cannot write to standard output: {getattr(exc, 'strerror', None) or exc}") from None


def _discard(stream) -> None:
    """What is left in the buffer cannot be written: let the interpreter's flush at exit
    write it nowhere instead of printing a traceback."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError):
        pass
