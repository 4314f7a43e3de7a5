"""Fan telemetry records out to the connected SubscribeTelemetry streams, in batches.

Each subscriber has a bounded queue of record batches. When a subscriber's queue is full,
``publish`` waits (the pipeline stops reading from the broker) instead of dropping: a slow
backend slows the gateway, it does not lose data it asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway._gen.telematics.v1 import telemetry_pb2
from gateway.going_away import GoingAway

# Records per gRPC message: large enough to amortize the per-message cost of gRPC, small enough
# to stay far below a default client's 4 MB receive limit (a record is ~100-400 bytes).
MAX_RECORDS_PER_MESSAGE = 1_000


class TelemetrySubscriber:
    def __init__(self, services: frozenset[str], queue_size: int) -> None:
        self.services = services
        # Bounded by `slots`, not by the queue itself, so that close() can always append its end
        # marker (None): the stream then ends after the records queued before it.
        self.queue: asyncio.Queue[telemetry_pb2.TelemetryRecords | None] = asyncio.Queue()
        self.slots = asyncio.Semaphore(queue_size)
        self.going_away = False  # set with the end marker when the gateway shuts down

    async def put(self, records: telemetry_pb2.TelemetryRecords) -> None:
        await self.slots.acquire()  # full: the pipeline waits (backpressure), nothing is dropped
        self.queue.put_nowait(records)

    async def get(self) -> telemetry_pb2.TelemetryRecords | None:
        """The next batch; None at the end. Raises GoingAway at the end when the gateway shuts
        down (the stream ends with UNAVAILABLE, not as finished)."""
        item = await self.queue.get()
        if item is not None:
            self.slots.release()
        elif self.going_away:
            raise GoingAway()
        return item

    def wants(self, service: str) -> bool:
        return not self.services or service in self.services


class TelemetryFanout:
    def __init__(self, *, queue_size: int) -> None:
        """queue_size: record batches buffered per subscriber before backpressure."""
        self._queue_size = queue_size
        self.subscribers: list[TelemetrySubscriber] = []
        self._closed = False
        self._going_away = False

    def subscribe(self, services: frozenset[str]) -> TelemetrySubscriber:
        sub = TelemetrySubscriber(services, self._queue_size)
        if self._closed:  # shutting down: a new stream ends at once, as the Watch streams do
            sub.going_away = self._going_away
            sub.queue.put_nowait(None)
        self.subscribers.append(sub)
        return sub

    def close(self, *, going_away: bool = False) -> None:
        """Ingest has stopped: each stream ends after the records queued for it; with
        going_away (shutdown) by raising GoingAway (UNAVAILABLE) instead of as finished."""
        self._closed = True
        self._going_away = self._going_away or going_away
        for sub in self.subscribers:
            sub.going_away = self._going_away
            sub.queue.put_nowait(None)

    def unsubscribe(self, sub: TelemetrySubscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    async def publish(self, records: Sequence[telemetry_pb2.TelemetryRecord]) -> int:
        """Queue the batch for every interested subscriber; return how many got records."""
        delivered = 0
        for sub in list(self.subscribers):
            mine = records if not sub.services else [r for r in records if sub.wants(r.service)]
            for start in range(0, len(mine), MAX_RECORDS_PER_MESSAGE):
                chunk = mine[start : start + MAX_RECORDS_PER_MESSAGE]
                await sub.put(telemetry_pb2.TelemetryRecords(records=chunk))
            delivered += bool(mine)
        return delivered
