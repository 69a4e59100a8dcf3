"""Sparklines: a series of rates as one line of Unicode blocks.

Scaled per series (its own peak is a full block), so a finding at 3 drops/s and one at
30,000/s both show their shape. Three cases must never look alike:
  - not measured (None)  -> a space: a gap, never drawn as zero;
  - zero                 -> the lowest block ▁ (measured, nothing dropped);
  - any drop at all      -> at least ▂, however small next to the peak, so a single
                            drop in a busy row is still visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
GAP = " "
ZERO = BLOCKS[0]


def sparkline(values: Sequence[float | None], width: int | None = None) -> str:
    """One character per value (the last `width` values when given)."""
    if width is not None:
        values = list(values)[-width:] if width > 0 else []
    known = [v for v in values if v is not None and math.isfinite(v)]
    peak = max(known, default=0.0)
    levels = len(BLOCKS) - 1  # blocks above ZERO
    out = []
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(GAP)
        elif value <= 0 or peak <= 0:
            out.append(ZERO)
        else:
            out.append(BLOCKS[max(1, min(levels, math.ceil(value / peak * levels)))])
    return "".join(out)
