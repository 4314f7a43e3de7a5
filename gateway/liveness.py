"""Liveness (/healthz): is the process wedged? Alive unless messages wait in the pipeline
(queued, or applied and waiting for their commit) and none has been acknowledged for
`wedge_after_s` although the store takes writes.

A gateway waiting for its database is alive (it resumes by itself when the database is back,
and a restart would not help), so an unavailable store excuses a standstill; so do a durable
telemetry sink that is down and a SubscribeTelemetry client that does not read (its queue is
full: backpressure by design, `waiting_by_design`). Sampled on each
check (the kubelet's probe, every few seconds): the standstill is measured from the first check
that saw the backlog without progress. Time comes from the injectable clock (unit tests).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.clock import Clock
from gateway.egress.telemetry import TelemetryFanout


class Liveness:
    def __init__(
        self,
        *,
        clock: Clock,
        wedge_after_s: float,
        backlog: Callable[[], int],
        progress: Callable[[], int],
        excused: Callable[[], bool],
    ) -> None:
        """backlog: messages read and not acknowledged yet (`Pipeline.queued`: a commit that
        hangs holds them). progress: a count that grows with each acknowledged message.
        excused: a standstill is expected now (the store is unavailable)."""
        self._clock = clock
        self._wedge_after_s = wedge_after_s
        self._backlog = backlog
        self._progress = progress
        self._excused = excused
        self._seen = progress()
        self._since = clock.now()  # when the current standstill (if any) was first seen

    def wedged(self) -> str | None:
        """None while alive; otherwise why the process counts as wedged."""
        now = self._clock.now()
        progress = self._progress()
        backlog = self._backlog()
        if progress != self._seen or backlog == 0 or self._excused():
            self._seen, self._since = progress, now
            return None
        stalled = now - self._since
        if stalled < self._wedge_after_s:
            return None
        return f"pipeline wedged: {backlog} messages queued, none processed for {stalled:.0f} s"


def waiting_by_design(*, store_available: bool, sink_ready: bool, fanout: TelemetryFanout) -> bool:
    """The pipeline may stand still and a restart would not help: it waits for the database,
    for a durable telemetry sink that is down, or for a SubscribeTelemetry client whose queue is
    full (a slow backend slows the gateway rather than losing records; restarting the gateway
    would only cut that client off)."""
    if not store_available or not sink_ready:
        return True
    return any(sub.slots.locked() for sub in fanout.subscribers)
