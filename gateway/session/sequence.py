"""Per-vehicle replay window over envelope sequence numbers.

The car numbers its envelopes for its whole life. QoS 1 redelivery and reconnects produce
duplicates; several connections in flight produce reordering. A 64-entry sliding window (as in
IPsec anti-replay) tells a repeat from a late first arrival without keeping every number.
"""

from __future__ import annotations

import enum

WINDOW = 64
_MASK = (1 << WINDOW) - 1


class Arrival(enum.Enum):
    NEW = "new"              # above everything seen: data and state apply
    LATE = "late"            # first arrival of an older number: data kept, state not regressed
    DUPLICATE = "duplicate"  # seen before: dropped
    TOO_OLD = "too_old"      # older than the window: cannot tell, dropped


def classify(last: int, window: int, seq: int) -> tuple[Arrival, int, int]:
    """Return (arrival, new_last, new_window). Bit i of window: (last - 1 - i) was seen."""
    if seq > last:
        shift = seq - last
        if last == 0:
            return Arrival.NEW, seq, 0
        if shift > WINDOW:
            return Arrival.NEW, seq, 0
        window = ((window << shift) | (1 << (shift - 1))) & _MASK
        return Arrival.NEW, seq, window
    if seq == last:
        return Arrival.DUPLICATE, last, window
    index = last - 1 - seq
    if index >= WINDOW:
        return Arrival.TOO_OLD, last, window
    bit = 1 << index
    if window & bit:
        return Arrival.DUPLICATE, last, window
    return Arrival.LATE, last, window | bit
