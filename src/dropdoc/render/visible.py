"""Characters from input that would change how the text around them reads are shown as
what they are: a process called "\u202etxt.exe" must not reverse the rest of a table row
(bidirectional overrides, as in "Trojan Source"), and a control character must not reach
a terminal that `cat`s the report (an ESC starts an escape sequence). Zero-width joiners
and other format characters are left alone: emoji and scripts need them."""

from __future__ import annotations

import re

# C0 and C1 controls but tab/newline/return, DEL, and the bidirectional controls.
_HIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with each such character replaced by its code point, e.g. {U+202E}."""
    return _HIDDEN.sub(lambda m: f"{{U+{ord(m.group()):04X}}}", text)
