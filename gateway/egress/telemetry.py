"""Fan telemetry records out to the connected SubscribeTelemetry streams, in batches.

Each subscriber has a bounded queue of record batches. When a subscriber's queue is full,
``publish`` waits (the pipeline stops reading from the broker) instead of dropping: a slow
backend slows the gateway, it does not lose data it asked for.

The batches are queued as the serialized ``TelemetryRecords`` message, built once per batch for
every subscriber with the same filter: each record arrives as its framed wire bytes (built once
by the rules stage, egress/record.py), and a message is the records' bytes spliced together
(the wire form of a repeated field is the concatenation of its elements, each framed by its tag
and length). The gRPC method sends these bytes as they are
(gateway/api/telemetry.py registers it without a response serializer), so neither copying the
records into one message per subscriber nor serializing it per subscriber is paid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.egress.record import OutRecord
from gateway.going_away import GoingAway

# Records per gRPC message: large enough to amortize the per-message cost of gRPC, small enough
# to stay far below a default client's 4 MB receive limit (a record is ~100-400 bytes).
MAX_RECORDS_PER_MESSAGE = 1_000

def splice(framed_records: Sequence[bytes]) -> list[bytes]:
    """Serialized TelemetryRecords messages of at most MAX_RECORDS_PER_MESSAGE records each."""
    return [
        b"".join(framed_records[start : start + MAX_RECORDS_PER_MESSAGE])
        for start in range(0, len(framed_records), MAX_RECORDS_PER_MESSAGE)
    ]


class TelemetrySubscriber:
    def __init__(self, services: frozenset[str], queue_size: int) -> None:
        self.services = services
        # Bounded by `slots`, not by the queue itself, so that close() can always append its end
        # marker (None): the stream then ends after the records queued before it. Each item is a
        # serialized TelemetryRecords message, shared with the subscribers of the same filter.
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.slots = asyncio.Semaphore(queue_size)
        self.going_away = False  # set with the end marker when the gateway shuts down
        self.gone = False  # the client went away: nothing more is queued for it

    async def put(self, records: bytes) -> None:
        if self.gone:
            return
        await self.slots.acquire()  # full: the pipeline waits (backpressure), nothing is dropped
        if not self.gone:
            self.queue.put_nowait(records)

    def leave(self) -> None:
        """The client went away: a publish waiting for room in its full queue goes on (it would
        otherwise wait forever, and with it the whole pipeline)."""
        self.gone = True
        self.slots.release()  # wakes the waiting put, which then queues nothing

    async def get(self) -> bytes | None:
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
        sub.leave()

    async def publish(self, records: Sequence[OutRecord]) -> int:
        """Queue the batch for every interested subscriber; return how many got records."""
        subscribers = list(self.subscribers)
        if not subscribers or not records:
            return 0
        every = [r.framed for r in records]  # the same bytes for all subscribers
        messages: dict[frozenset[str], list[bytes]] = {}  # per filter: built once, shared
        delivered = 0
        for sub in subscribers:
            mine = messages.get(sub.services)
            if mine is None:
                wanted = sub.services
                chosen = every if not wanted else [r.framed for r in records if r.service in wanted]
                mine = messages[sub.services] = splice(chosen)
            for message in mine:
                await sub.put(message)
            delivered += bool(mine)
        return delivered
