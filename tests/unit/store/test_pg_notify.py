"""Commit wake-ups between gateways on one PostgreSQL database: outbox commits NOTIFY their
highest cursor (gateway/store/pg_outbox.py), and the listener (gateway/store/pg_notify.py)
wakes an EventHub with it, also across a lost and re-established LISTEN connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from support import eventually

from gateway.metrics import Metrics
from gateway.session.hub import EventHub
from gateway.store import pg_notify, pg_outbox
from gateway.store.base import StoreError
from gateway.store.pg_notify import OutboxListener, Wake
from gateway.store.pg_outbox import ENTITLEMENT_EVENTS, VEHICLE_EVENTS, Outbox

VIN = "WP0ZZZ99ZTS392124"


def _row(outbox: Outbox, payload: bytes) -> tuple[Any, ...]:
    return (VIN, "online", payload) if outbox is VEHICLE_EVENTS else (VIN, "e1", "granted", payload)


@pytest.fixture(params=[VEHICLE_EVENTS, ENTITLEMENT_EVENTS], ids=lambda o: o.table)
def outbox(request: pytest.FixtureRequest) -> Outbox:
    value: Outbox = request.param
    return value


@pytest.fixture
async def writer(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _commit(conn: asyncpg.Connection, outbox: Outbox, count: int = 1) -> int:
    """Append `count` rows in one transaction; the highest cursor."""
    async with conn.transaction():
        cursors = await pg_outbox.append(conn, outbox, [_row(outbox, b"x")] * count)
    return cursors[-1]


class Listening:
    """A listener on both outboxes with a hub each, running until the test ends."""

    def __init__(self, url: str) -> None:
        self.metrics = Metrics()
        self.hubs = {VEHICLE_EVENTS.table: EventHub(), ENTITLEMENT_EVENTS.table: EventHub()}
        self.listener = OutboxListener(
            url=url, metrics=self.metrics,
            wakes=[Wake(o, self.hubs[o.table].notify) for o in (VEHICLE_EVENTS, ENTITLEMENT_EVENTS)],
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def listening(pg_url: str) -> AsyncIterator[Listening]:
    it = Listening(pg_url)
    await it.listener.start()
    task = asyncio.create_task(it.listener.run())
    try:
        yield it
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await it.listener.close()


async def test_an_outbox_commit_notifies_its_channel_with_its_highest_cursor_only(
    outbox: Outbox, writer: asyncpg.Connection, pg_url: str
) -> None:
    received: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
    listener = await asyncpg.connect(pg_url)
    try:
        await listener.add_listener(
            outbox.channel, lambda _c, _p, channel, payload: received.put_nowait((channel, payload))
        )
        highest = await _commit(writer, outbox, count=3)
        assert await asyncio.wait_for(received.get(), 10) == (outbox.channel, str(highest))
        # A rolled-back write notifies nothing: the next notification is the next commit's.
        tx = writer.transaction()
        await tx.start()
        await pg_outbox.append(writer, outbox, [_row(outbox, b"rolled back")])
        await tx.rollback()
        after = await _commit(writer, outbox)
        assert await asyncio.wait_for(received.get(), 10) == (outbox.channel, str(after))
    finally:
        await listener.close()


async def test_a_commit_on_another_connection_wakes_the_hub_of_its_outbox(
    outbox: Outbox, writer: asyncpg.Connection, listening: Listening
) -> None:
    hub = listening.hubs[outbox.table]
    assert hub.latest == 0
    cursor = await _commit(writer, outbox, count=2)
    await asyncio.wait_for(hub.wait_beyond(cursor - 1), 10)
    assert hub.latest == cursor
    other = next(h for name, h in listening.hubs.items() if name != outbox.table)
    assert other.latest == 0
    assert listening.sample("gateway_store_notifications_total", outbox=outbox.table, outcome="ok") == 1


async def test_the_listener_starts_with_the_hubs_at_the_newest_committed_cursor(
    writer: asyncpg.Connection, pg_url: str
) -> None:
    cursor = await _commit(writer, VEHICLE_EVENTS, count=4)
    it = Listening(pg_url)
    await it.listener.start()
    try:
        assert it.hubs[VEHICLE_EVENTS.table].latest == cursor
        assert it.hubs[ENTITLEMENT_EVENTS.table].latest == 0
    finally:
        await it.listener.close()


async def test_a_killed_listen_connection_is_reconnected_and_what_committed_meanwhile_wakes_the_hub(
    writer: asyncpg.Connection, listening: Listening, pg_url: str
) -> None:
    gate = asyncio.Event()  # holds the reconnect back until the commit happened

    async def gated(url: str) -> asyncpg.Connection:
        await gate.wait()
        return await pg_notify.connect(url)

    listening.listener.connect = gated
    hub = listening.hubs[VEHICLE_EVENTS.table]
    pid = listening.listener.backend_pid
    assert pid is not None
    assert await writer.fetchval("SELECT pg_terminate_backend($1)", pid)
    await eventually(lambda: asyncio.sleep(0, listening.sample("gateway_store_notify_connected")),
                     lambda v: v == 0)
    cursor = await _commit(writer, VEHICLE_EVENTS)  # its NOTIFY reaches no one of ours
    assert hub.latest < cursor
    gate.set()
    await asyncio.wait_for(hub.wait_beyond(cursor - 1), 10)
    assert hub.latest == cursor
    await eventually(lambda: asyncio.sleep(0, listening.sample("gateway_store_notify_reconnects_total")),
                     lambda v: v == 1)
    assert listening.sample("gateway_store_notify_connected") == 1
    assert listening.listener.backend_pid not in (None, pid)
    # And the new connection listens.
    later = await _commit(writer, VEHICLE_EVENTS)
    await asyncio.wait_for(hub.wait_beyond(later - 1), 10)


async def test_a_notification_that_is_not_a_cursor_is_counted_and_ignored(
    writer: asyncpg.Connection, listening: Listening
) -> None:
    hub = listening.hubs[VEHICLE_EVENTS.table]
    for payload in ("hello", "-1", "99999999999999999999", ""):
        await writer.execute("SELECT pg_notify($1, $2)", VEHICLE_EVENTS.channel, payload)
    cursor = await _commit(writer, VEHICLE_EVENTS)  # the sentinel: notifications arrive in order
    await asyncio.wait_for(hub.wait_beyond(cursor - 1), 10)
    assert hub.latest == cursor
    labels = {"outbox": VEHICLE_EVENTS.table}
    assert listening.sample("gateway_store_notifications_total", **labels, outcome="bad_payload") == 4
    assert listening.sample("gateway_store_notifications_total", **labels, outcome="ok") == 1


async def test_an_unreachable_database_fails_the_start_without_showing_the_password() -> None:
    listener = OutboxListener(url="postgresql://gw:s3cret@127.0.0.1:1/gateway", wakes=[], metrics=Metrics())
    with pytest.raises(StoreError) as caught:
        await listener.start()
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
