"""Wakes Watch streams when new events are committed. Holds no events itself: readers always
read from the durable log, so a stream can never see an event that is not durable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from gateway.going_away import GoingAway


class LogRow(Protocol):
    @property
    def cursor(self) -> int: ...


Row = TypeVar("Row", bound=LogRow)


class EventHub:
    def __init__(self) -> None:
        self.latest = 0
        self.closed = False
        self.going_away = False
        self._changed = asyncio.Event()

    def close(self, *, going_away: bool = False) -> None:
        """Followers end after what they have read instead of waiting for new events.

        going_away (the gateway shuts down): they raise GoingAway then (streams end with
        UNAVAILABLE: the client reconnects with its cursor instead of waiting out the server's
        grace); otherwise they return (a finished stream)."""
        self.closed = True
        self.going_away = self.going_away or going_away
        self._changed.set()

    def notify(self, cursor: int) -> None:
        if cursor > self.latest:
            self.latest = cursor
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_beyond(self, cursor: int) -> None:
        while self.latest <= cursor and not self.closed:
            await self._changed.wait()

    async def follow(
        self, read: Callable[[int], Awaitable[Sequence[Row]]], after: int, chunk: int
    ) -> AsyncIterator[Row]:
        """Every row after `after`, in cursor order, then each new one as it is committed.

        read(cursor) returns up to `chunk` rows after `cursor` from the durable log: at least
        once, never a row that is not durable, resumable from any cursor a client saw.
        """
        cursor = after
        while True:
            seen = self.latest  # taken before the read: a later commit raises latest beyond it
            rows = await read(cursor)
            for row in rows:
                yield row
                cursor = row.cursor
            if len(rows) < chunk:
                if self.closed:
                    if self.going_away:
                        raise GoingAway()
                    return
                await self.wait_beyond(seen)
