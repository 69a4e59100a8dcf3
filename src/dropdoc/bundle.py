"""Bundles: a measurement window packed for diagnosis later, on another machine.

    manifest.json        schema dropdoc.bundle/1, host, kernel, distro, window, dropdoc version
    before/<key>         every raw answer of the first snapshot (proc/net/snmp, netlink/..., json/...)
    after/<key>          the same for the second snapshot
    listeners.json       the accept-queue samples taken during the window
    diagnosis.json       the diagnosis made when collecting (for reference; --from recomputes)

Raw answers, not parsed data, are stored so a newer dropdoc can re-parse an old bundle.
Reading never extracts to disk: members are read into memory, with size limits.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import time
import zlib
from typing import Any

from . import __version__
from . import delta as delta_mod
from .errors import DropdocError
from .snapshot import Snapshot, replay_snapshot, snapshot_meta
from .sources.tcp_listeners import Listener
from .window import ListenerStats, Window

SCHEMA = "dropdoc.bundle/1"
MAX_MEMBER_BYTES = 64 << 20
MAX_TOTAL_BYTES = 512 << 20


class BundleError(DropdocError):
    """The file is not a readable dropdoc bundle."""


def _os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep:
                    info[key] = value.strip('"')
    except OSError:
        pass
    return {k: info[k] for k in ("ID", "VERSION_ID", "PRETTY_NAME") if k in info}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mtime = int(time.time())
    tar.addfile(member, io.BytesIO(data))


def _listener_json(stats: ListenerStats) -> dict[str, Any]:
    return {"listener": dataclasses.asdict(stats.listener), "peak_queue": stats.peak_queue,
            "full_samples": stats.full_samples, "samples": stats.samples, "full_at_end": stats.full_at_end}


def write_bundle(window: Window, path: str, diagnosis: dict[str, Any] | None = None) -> None:
    if window.before.raw is None or window.after.raw is None:
        raise BundleError("the window was measured without recording raw data")
    manifest = {
        "schema": SCHEMA, "dropdoc": __version__, "created": time.time(),
        "distro": _os_release(), "window": {"seconds": window.seconds},
        "listener_sampling": window.listener_sampling,
        "before": snapshot_meta(window.before), "after": snapshot_meta(window.after),
    }
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        for side, snap in (("before", window.before), ("after", window.after)):
            for key, data in sorted(snap.raw.items()):
                _add(tar, f"{side}/{key}", data)
        _add(tar, "listeners.json", json.dumps([_listener_json(s) for s in window.listeners.values()]).encode())
        if diagnosis is not None:
            _add(tar, "diagnosis.json", json.dumps(diagnosis, indent=2).encode())


def _members(path: str) -> dict[str, bytes]:
    try:
        tar = tarfile.open(path, "r:*")
    except OSError as exc:
        raise BundleError(f"{path}: {exc.strerror or exc}") from None
    except (tarfile.TarError, EOFError, ValueError, zlib.error):
        raise BundleError(f"{path}: not a dropdoc bundle (not a tar archive)") from None
    files: dict[str, bytes] = {}
    total = 0
    with tar:
        try:
            for member in tar:
                if not member.isfile():
                    continue
                if member.size > MAX_MEMBER_BYTES or total + member.size > MAX_TOTAL_BYTES:
                    raise BundleError(f"{path}: member {member.name} too large for a bundle")
                handle = tar.extractfile(member)
                if handle is not None:
                    files[member.name] = handle.read()
                    total += member.size
        except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
            raise BundleError(f"{path}: damaged bundle ({type(exc).__name__})") from None
    return files


def _listener_stats(entries: list[dict[str, Any]]) -> dict[int, ListenerStats]:
    stats: dict[int, ListenerStats] = {}
    for entry in entries:
        listener = Listener(**entry["listener"])
        stats[listener.inode] = ListenerStats(listener, int(entry["peak_queue"]), int(entry["full_samples"]),
                                              int(entry["samples"]), bool(entry["full_at_end"]))
    return stats


def read_bundle(path: str) -> Window:
    files = _members(path)
    try:
        manifest = json.loads(files["manifest.json"])
    except (KeyError, ValueError):
        raise BundleError(f"{path}: no readable manifest.json: not a dropdoc bundle") from None
    if manifest.get("schema") != SCHEMA:
        raise BundleError(f"{path}: bundle schema {manifest.get('schema')!r}, this dropdoc reads {SCHEMA}")
    try:
        snaps: list[Snapshot] = []
        for side in ("before", "after"):
            prefix = f"{side}/"
            raw = {name[len(prefix):]: data for name, data in files.items() if name.startswith(prefix)}
            snaps.append(replay_snapshot(raw, manifest[side]))
        listeners = _listener_stats(json.loads(files.get("listeners.json", b"[]")))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: damaged manifest or listener samples ({exc})") from None
    before, after = snaps
    return Window(before, after, delta_mod.compute(before, after), listeners,
                  str(manifest.get("listener_sampling", "ok")))
