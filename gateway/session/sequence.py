"""Per-vehicle replay window over envelope sequence numbers, per sequence epoch.

The car numbers its envelopes within a sequence epoch: a random number drawn once per head-unit
install (Envelope.sequence_epoch; 0 for cars that predate epochs). QoS 1 redelivery and
reconnects produce duplicates; several connections in flight produce reordering. A 64-entry
sliding window (as in IPsec anti-replay) tells a repeat from a late first arrival without
keeping every number.

Two things must never freeze a car (every later message judged too old):
* a sequence far ahead (a corrupted counter, a spoofed message): a jump of more than
  ``MAX_JUMP`` above the highest number seen is refused and not remembered as the highest,
  unless the next envelope continues from it (the car's counter really moved);
* a new head-unit install counting from 1 again: its Hello carries a new epoch and opens a new
  sequence space. The space it replaced is kept (one step back), so redeliveries from before
  the reset are still told apart and never switch the car back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

WINDOW = 64
_MASK = (1 << WINDOW) - 1
# Far above any gap a car produces by losing QoS 0 telemetry (11 days at one message a second
# with not a single QoS 1 message through), far below the 2**64 a bad counter can reach.
MAX_JUMP = 1_000_000


class Arrival(enum.Enum):
    NEW = "new"              # above everything seen: data and state apply
    LATE = "late"            # first arrival of an older number: data kept, state not regressed
    DUPLICATE = "duplicate"  # seen before: dropped
    TOO_OLD = "too_old"      # older than the window: cannot tell, dropped
    JUMP = "jump"            # more than MAX_JUMP ahead: refused (rejected, reason sequence_jump)
    OTHER_EPOCH = "other_epoch"  # an epoch with no Hello yet: data kept, state untouched


def classify(last: int, window: int, seq: int) -> tuple[Arrival, int, int]:
    """Return (arrival, new_last, new_window). Bit i of window: (last - 1 - i) was seen.

    last == 0: nothing seen yet, any number opens the space (a car meeting this gateway for
    the first time may have counted for years).
    """
    if seq > last:
        shift = seq - last
        if last == 0:
            return Arrival.NEW, seq, 0
        if shift > MAX_JUMP:
            return Arrival.JUMP, last, window
        if shift > WINDOW:
            return Arrival.NEW, seq, 0
        window = ((window << shift) | (1 << (shift - 1))) & _MASK
        # A car whose last 64 numbers all arrived (nearly every car, nearly always) shares the
        # one full-window int instead of a new 36-byte one per car (issue 12).
        return Arrival.NEW, seq, _MASK if window == _MASK else window
    if seq == last:
        return Arrival.DUPLICATE, last, window
    index = last - 1 - seq
    if index >= WINDOW:
        return Arrival.TOO_OLD, last, window
    bit = 1 << index
    if window & bit:
        return Arrival.DUPLICATE, last, window
    return Arrival.LATE, last, window | bit


@dataclass(frozen=True, slots=True)
class Space:
    """One sequence space: the epoch, the highest sequence seen in it and its replay window."""

    epoch: int = 0
    last: int = 0
    window: int = 0
    # In memory only: a refused jump; the next envelope continuing from it confirms it.
    jump: int = 0


def _in_space(space: Space, seq: int) -> tuple[Arrival, Space]:
    arrival, last, window = classify(space.last, space.window, seq)
    if arrival is Arrival.JUMP:
        if space.jump and space.jump < seq <= space.jump + MAX_JUMP:
            # Two envelopes agree that the counter moved: follow it (not freezing the car
            # whose counter really jumped). What lies between is gone anyway.
            return Arrival.NEW, Space(space.epoch, seq, 0)
        return Arrival.JUMP, Space(space.epoch, last, window, jump=seq)
    if arrival is Arrival.NEW:
        return arrival, Space(space.epoch, last, window)  # a normal successor: the jump was a glitch
    return arrival, Space(space.epoch, last, window, space.jump)


def classify_epoch(
    current: Space, previous: Space, epoch: int, seq: int, *, hello: bool
) -> tuple[Arrival, Space, Space]:
    """Classify an envelope of `epoch`; return (arrival, new current, new previous)."""
    if epoch == current.epoch or current.last == 0:
        # current.last == 0: the first envelope the gateway sees of this car opens its space.
        arrival, space = _in_space(Space(epoch, current.last, current.window, current.jump), seq)
        return arrival, space, previous
    if epoch == previous.epoch and previous.last:
        arrival, space = _in_space(previous, seq)
        if arrival is Arrival.NEW:
            if hello:
                # That install speaks again (e.g. the real car's Hello after a spoofed one with
                # another epoch took over its client id): it becomes current again.
                return arrival, space, current
            arrival = Arrival.LATE  # a retired space: data kept, state never regressed
        return arrival, current, space
    if hello:
        return Arrival.NEW, Space(epoch, seq, 0), current  # a new install: a new sequence space
    return Arrival.OTHER_EPOCH, current, previous
