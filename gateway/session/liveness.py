"""Liveness from the uplink: a car that stops sending goes offline even without a will.

The gateway never sees the car's MQTT PINGREQs (they end at the broker), and a connection can
end without a will (a client that set none, a will the broker could not publish). So the car
announces a heartbeat interval in its Hello and sends an envelope at least that often; silent
for ``MISSED_HEARTBEATS`` intervals plus the presence grace of its bearer and radio (R20), it
is reported offline with reason TIMEOUT.

The schedule is a lazy heap with at most one entry per online car: an entry is only a time to
look again. When it comes due, the car's real deadline is computed from its last envelope; a
car that spoke meanwhile is simply re-armed. So the hot path (every envelope) pays nothing.
"""

from __future__ import annotations

import heapq
import math

MISSED_HEARTBEATS = 3
MAX_HEARTBEAT_S = 3600  # an announced interval above this counts as this


def liveness_timeout_s(announced_s: int, default_s: float, grace_s: float) -> float:
    """Seconds of silence after which an online car counts as gone."""
    interval = min(announced_s, MAX_HEARTBEAT_S) if announced_s > 0 else default_s
    return MISSED_HEARTBEATS * interval + grace_s


class LivenessSchedule:
    """When to look at each online car again, at most one time per car.

    Memory (issue 12: a million cars online): a heap of (time, vin) tuples and a set of the
    scheduled VINs cost ~100-170 bytes per car. Here a car costs one dict entry (vin -> time)
    and its VIN's place in the list of its whole second; a heap orders only the seconds. The
    result is the heap's: a car is due exactly at its time, due cars come out by (time, vin).
    """

    __slots__ = ("_at", "_seconds", "_vins")

    def __init__(self) -> None:
        self._at: dict[str, float] = {}  # vin -> when to look at it again
        self._vins: dict[int, list[str]] = {}  # whole second -> the VINs due within it
        self._seconds: list[int] = []  # heap of the keys of _vins

    def watch(self, vin: str, at: float) -> None:
        """Look at `vin` again at `at` (no-op when it is scheduled already)."""
        if vin in self._at:
            return
        self._at[vin] = at
        second = math.floor(at)
        vins = self._vins.get(second)
        if vins is None:
            vins = self._vins[second] = []
            heapq.heappush(self._seconds, second)
        vins.append(vin)

    def due(self, now: float) -> bool:
        if not self._seconds:
            return False
        second = self._seconds[0]
        if second + 1 <= now:
            return True  # everything of that second is due
        at = self._at
        return second <= now and any(at[vin] <= now for vin in self._vins[second])

    def __bool__(self) -> bool:
        return bool(self._at)

    def pop_due(self, now: float) -> list[str]:
        at = self._at
        out: list[tuple[float, str]] = []
        while self._seconds and self._seconds[0] <= now:
            second = self._seconds[0]
            vins = self._vins[second]
            if second + 1 <= now:  # the whole second is due
                heapq.heappop(self._seconds)
                del self._vins[second]
                out.extend((at.pop(vin), vin) for vin in vins)
                continue
            # `now` lies within this second: only its cars due by now come out.
            later = [vin for vin in vins if at[vin] > now]
            out.extend((at.pop(vin), vin) for vin in vins if at[vin] <= now)
            if later:
                self._vins[second] = later
            else:
                heapq.heappop(self._seconds)
                del self._vins[second]
            break
        out.sort()
        return [vin for _, vin in out]
