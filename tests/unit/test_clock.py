"""ManualClock.sleep: a timer that only the test's advance() lets run out."""

from __future__ import annotations

import asyncio

from gateway.clock import ManualClock, SystemClock


async def test_manual_sleep_returns_only_once_advance_passes_its_deadline() -> None:
    clock = ManualClock()
    timer = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    clock.advance(9.5)
    await asyncio.sleep(0)
    assert not timer.done()  # 0.5 s short of its deadline
    clock.advance(0.5)
    await asyncio.wait_for(timer, 5)


async def test_manual_sleepers_wake_in_deadline_order_and_set_wakes_them_too() -> None:
    clock = ManualClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper("late", 20)), asyncio.create_task(sleeper("early", 5))]
    await asyncio.sleep(0)
    clock.set(clock.now() + 30)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert woke == ["early", "late"]


async def test_a_cancelled_manual_sleep_does_not_break_the_others() -> None:
    clock = ManualClock()
    cancelled = asyncio.create_task(clock.sleep(1))
    kept = asyncio.create_task(clock.sleep(2))
    await asyncio.sleep(0)
    cancelled.cancel()
    clock.advance(5)
    await asyncio.wait_for(kept, 5)
    assert cancelled.cancelled()


async def test_system_sleep_waits_in_real_time() -> None:
    await asyncio.wait_for(SystemClock().sleep(0), 5)
