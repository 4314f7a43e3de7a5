"""PostgreSQL outbox cursors (gateway/store/pg_outbox.py) under concurrent commits, driven by
explicit transactions on two connections: with bare sequence numbering a reader that moved past
a cursor loses an event committed later with a lower one; with the outbox lock it cannot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from support import eventually

from gateway.store import pg_outbox
from gateway.store.pg_outbox import ENTITLEMENT_EVENTS, VEHICLE_EVENTS, Outbox

VIN = "WP0ZZZ99ZTS392124"


def _row(outbox: Outbox, payload: bytes) -> tuple[Any, ...]:
    return (VIN, "online", payload) if outbox is VEHICLE_EVENTS else (VIN, "e1", "granted", payload)


@pytest.fixture(params=[VEHICLE_EVENTS, ENTITLEMENT_EVENTS], ids=lambda o: o.table)
def outbox(request: pytest.FixtureRequest) -> Outbox:
    value: Outbox = request.param
    return value


Conns = tuple[asyncpg.Connection, asyncpg.Connection, asyncpg.Connection]


@pytest.fixture
async def conns(pg_url: str) -> AsyncIterator[Conns]:
    """Two writers and a reader."""
    opened = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        yield opened[0], opened[1], opened[2]
    finally:
        for c in opened:
            await c.close()


async def _cursors(reader: asyncpg.Connection, outbox: Outbox, after: int) -> list[int]:
    return [int(r["cursor"]) for r in await pg_outbox.read(reader, outbox, after, 100)]


async def test_bare_sequence_numbering_loses_an_event_committed_after_a_higher_one(
    outbox: Outbox, conns: Conns
) -> None:
    # Why the outbox needs its lock: this is what a plain bigserial does.
    a, b, reader = conns
    ta, tb = a.transaction(), b.transaction()
    await ta.start()
    [low] = await pg_outbox.append_unordered(a, outbox, [_row(outbox, b"low")])
    await tb.start()
    [high] = await pg_outbox.append_unordered(b, outbox, [_row(outbox, b"high")])
    await tb.commit()
    assert low < high
    assert await _cursors(reader, outbox, 0) == [high]  # the reader moves its cursor to `high`
    await ta.commit()
    assert await _cursors(reader, outbox, high) == []  # `low` is never delivered to it...
    assert await _cursors(reader, outbox, 0) == [low, high]  # ...though it is committed


async def test_outbox_cursors_follow_commit_order_so_a_reader_misses_no_event(
    outbox: Outbox, conns: Conns
) -> None:
    a, b, reader = conns
    ta, tb = a.transaction(), b.transaction()
    await ta.start()
    [first] = await pg_outbox.append(a, outbox, [_row(outbox, b"first")])
    await tb.start()
    second_task = asyncio.create_task(pg_outbox.append(b, outbox, [_row(outbox, b"second")]))
    # The second writer waits for the first one's lock (seen from the server, not guessed).
    await eventually(
        lambda: reader.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", b.get_server_pid()
        ),
        lambda wait: wait == "Lock",
    )
    assert not second_task.done()
    assert await _cursors(reader, outbox, 0) == []
    await ta.commit()
    [second] = await second_task  # numbered only now, after `first` is visible
    assert first < second
    seen = await _cursors(reader, outbox, 0)
    assert seen == [first]
    await tb.commit()
    assert await _cursors(reader, outbox, seen[-1]) == [second]


async def test_a_rolled_back_writer_leaves_a_gap_that_readers_pass(
    outbox: Outbox, conns: Conns
) -> None:
    a, b, reader = conns
    ta = a.transaction()
    await ta.start()
    [lost] = await pg_outbox.append(a, outbox, [_row(outbox, b"lost")])
    await ta.rollback()
    async with b.transaction():
        [kept] = await pg_outbox.append(b, outbox, [_row(outbox, b"kept")])
    assert kept > lost
    assert await _cursors(reader, outbox, 0) == [kept]
