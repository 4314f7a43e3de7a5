"""Wakes Watch streams when new events are committed. Holds no events itself: readers always
read from the store, so a stream can never see an event that is not durable."""

from __future__ import annotations

import asyncio


class EventHub:
    def __init__(self) -> None:
        self.latest = 0
        self._changed = asyncio.Event()

    def notify(self, cursor: int) -> None:
        if cursor > self.latest:
            self.latest = cursor
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_beyond(self, cursor: int) -> None:
        while self.latest <= cursor:
            await self._changed.wait()
