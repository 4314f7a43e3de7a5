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

MISSED_HEARTBEATS = 3
MAX_HEARTBEAT_S = 3600  # an announced interval above this counts as this


def liveness_timeout_s(announced_s: int, default_s: float, grace_s: float) -> float:
    """Seconds of silence after which an online car counts as gone."""
    interval = min(announced_s, MAX_HEARTBEAT_S) if announced_s > 0 else default_s
    return MISSED_HEARTBEATS * interval + grace_s


class LivenessSchedule:
    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._scheduled: set[str] = set()

    def watch(self, vin: str, at: float) -> None:
        """Look at `vin` again at `at` (no-op when it is scheduled already)."""
        if vin not in self._scheduled:
            self._scheduled.add(vin)
            heapq.heappush(self._heap, (at, vin))

    def due(self, now: float) -> bool:
        return bool(self._heap) and self._heap[0][0] <= now

    def __bool__(self) -> bool:
        return bool(self._heap)

    def pop_due(self, now: float) -> list[str]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, vin = heapq.heappop(self._heap)
            self._scheduled.discard(vin)
            out.append(vin)
        return out
