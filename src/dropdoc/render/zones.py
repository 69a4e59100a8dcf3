"""The time zone a report shows its times in: UTC, this machine's own zone, an IANA name or
a fixed offset (`dropdoc report --tz`). Every time carries its offset ("UTC" when it is
zero), so a report read in another zone, or across a daylight-saving change, is not
misread."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import DropdocError

UTC = timezone.utc
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
_UTC_NAMES = {"utc", "z", "gmt", "etc/utc", "etc/gmt", "zulu", "universal"}


class ZoneError(DropdocError):
    """A --tz value that names no time zone."""


def resolve(name: str | None) -> tzinfo:
    """UTC for None; "local", "UTC", "Europe/Paris", "+05:30", "UTC-8" otherwise."""
    if name is None or name.strip().lower() in _UTC_NAMES:
        return UTC
    text = name.strip()
    if text.lower() == "local":
        return local_zone()
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if hours > 23 or minutes > 59:
            raise ZoneError(f"time zone offset {name!r} out of range (-23:59 to +23:59)")
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if sign == "-" else 1)
        return UTC if not offset else timezone(offset, f"UTC{sign}{hours:02d}:{minutes:02d}")
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ZoneError(f"unknown time zone {name!r} (use UTC, local, an IANA name such as "
                        "Europe/Paris, or an offset such as +05:30)") from None


def local_zone() -> tzinfo:
    """This machine's zone, with its daylight-saving rules when they can be found."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        link = os.readlink("/etc/localtime")
        candidates.append(link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else "")
    except OSError:
        pass
    try:
        with open("/etc/timezone", encoding="utf-8") as handle:
            candidates.append(handle.read().strip())
    except OSError:
        pass
    for key in candidates:
        if key:
            try:
                return UTC if key.lower() in _UTC_NAMES else ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                continue
    fixed = datetime.now().astimezone().tzinfo     # a fixed offset: better than nothing
    return UTC if fixed is None or not fixed.utcoffset(None) else fixed


def offset_text(when: datetime) -> str:
    """ "UTC" for a zero offset, "+05:30" otherwise."""
    offset = when.utcoffset() or timedelta(0)
    if not offset:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def describe(zone: tzinfo, at: float | None = None) -> str:
    """The zone for a caption: "UTC", "Europe/Paris, UTC+01:00", "UTC+05:30"."""
    try:
        when = datetime.fromtimestamp(at if at is not None else 0.0, tz=zone)
    except (OverflowError, OSError, ValueError):   # a time from a damaged file
        when = datetime.fromtimestamp(0.0, tz=zone)
    offset = offset_text(when)
    name = getattr(zone, "key", None) or zone.tzname(when) or ""
    if offset == "UTC":
        return "UTC" if zone is UTC or name.lower() in _UTC_NAMES else f"{name}, UTC"
    if not name or name.startswith(("UTC", "+", "-")):
        return f"UTC{offset}"
    return f"{name}, UTC{offset}"
