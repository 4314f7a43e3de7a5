import asyncio
from dataclasses import dataclass

from gateway.session.hub import EventHub


@dataclass(frozen=True)
class Row:
    cursor: int


async def turns(n: int = 20) -> None:
    """Let the other tasks run until they block. Everything here is in memory (no timer, no I/O),
    so a fixed number of loop turns is a fact about the code, not about the machine's speed."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_follow_replays_then_waits_for_new_rows_and_ends_on_close() -> None:
    hub = EventHub()
    log = [Row(1), Row(2)]
    hub.notify(2)

    async def read(after: int) -> list[Row]:
        return [r for r in log if r.cursor > after][:10]

    seen: list[int] = []

    async def consume() -> None:
        async for row in hub.follow(read, 0, 10):
            seen.append(row.cursor)

    task = asyncio.create_task(consume())
    await turns()
    assert seen == [1, 2] and not task.done()  # replayed, now following
    log.append(Row(3))
    hub.notify(3)
    await turns()
    assert seen == [1, 2, 3]
    hub.close()
    await asyncio.wait_for(task, 1)  # the stream ends instead of waiting forever


async def test_follow_resumes_after_a_cursor() -> None:
    hub = EventHub()
    hub.notify(3)
    hub.close()

    async def read(after: int) -> list[Row]:
        return [r for r in (Row(1), Row(2), Row(3)) if r.cursor > after]

    assert [r.cursor async for r in hub.follow(read, 1, 10)] == [2, 3]
