"""Injectable time: every time-dependent decision asks a Clock, so tests never sleep."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, unix seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock (a timer: tests move a ManualClock
        instead of waiting)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to (tests, accelerated simulations). `sleep` returns
    once `advance` or `set` moved the clock to or past its deadline."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        # (deadline, order, future): the earliest first; the order keeps equal deadlines FIFO.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + max(seconds, 0.0)
        if deadline <= self._now:
            await asyncio.sleep(0)  # a zero sleep still yields, as asyncio.sleep(0) does
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), waiter))
        await waiter  # cancelled: the future is done and skipped when its deadline passes

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._now += seconds
        self._wake()

    def set(self, now: float) -> None:
        self._now = now
        self._wake()

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if not waiter.done():
                waiter.set_result(None)
