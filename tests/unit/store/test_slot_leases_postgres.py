"""Ingest-slot leases on the real PostgreSQL (gateway/store/slot_leases_postgres.py): two (or
more) gateways as lease holders on one database, expiry judged by the database's clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support import eventually

from gateway.ingress.slots import slot_names
from gateway.store.slot_leases_postgres import PostgresLeaseTable

SLOTS = slot_names("gw", 3)
LONG = 60.0


@pytest.fixture
async def table(pg_url: str) -> AsyncIterator[PostgresLeaseTable]:
    t = PostgresLeaseTable(url=pg_url)
    await t.open()
    try:
        await t.join("a", SLOTS, LONG)
        await t.join("b", SLOTS, LONG)
        yield t
    finally:
        await t.close()


async def expired(table: PostgresLeaseTable, slot: str) -> bool:
    """By the database's clock, as the table judges it."""
    sql = "SELECT expires_at <= now() FROM ingest_slots WHERE slot = $1"
    return bool(await table.database.pool.fetchval(sql, slot))


async def test_two_holders_claim_different_slots(table: PostgresLeaseTable) -> None:
    a = await table.claim("a", SLOTS, 1, LONG)
    b = await table.claim("b", SLOTS, 2, LONG)
    assert len(a) == 1 and len(b) == 2 and not set(a) & set(b)
    assert await table.claim("a", SLOTS, 1, LONG) == []  # nothing left


async def test_concurrent_claims_never_hand_one_slot_to_two_holders(pg_url: str) -> None:
    tables = [PostgresLeaseTable(url=pg_url) for _ in range(8)]
    for t in tables:
        await t.open()
    try:
        await tables[0].join("h0", SLOTS, LONG)
        claims = await asyncio.gather(*(t.claim(f"h{i}", SLOTS, 1, LONG) for i, t in enumerate(tables)))
        won = [slot for claim in claims for slot in claim]
        assert sorted(won) == SLOTS  # each slot once; five holders got nothing
    finally:
        for t in tables:
            await t.close()


async def test_only_the_holder_renews_and_only_before_expiry(table: PostgresLeaseTable) -> None:
    [slot] = await table.claim("a", SLOTS, 1, LONG)
    assert await table.renew("b", [slot], LONG) == set()
    assert await table.renew("a", [slot], LONG) == {slot}
    [short] = await table.claim("a", SLOTS, 1, 0.2)
    await eventually(lambda: expired(table, short), bool)
    assert await table.renew("a", [short], LONG) == set()


async def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_renew_it(
    table: PostgresLeaseTable,
) -> None:
    [slot] = await table.claim("a", [SLOTS[0]], 1, 0.3)
    assert await table.claim("b", [SLOTS[0]], 1, LONG) == []  # held: no double holding
    taken = await eventually(lambda: table.claim("b", [SLOTS[0]], 1, LONG), lambda got: got == [slot])
    assert taken == [slot]
    assert await table.renew("a", [slot], LONG) == set()


async def test_a_released_slot_is_free_at_once_and_orphans_are_claimed_first(
    table: PostgresLeaseTable,
) -> None:
    assert await table.claim("a", SLOTS[1:2], 1, LONG) == [SLOTS[1]]
    await table.release("a", [SLOTS[1]])
    # gw-2 was held before (its session has a queue at the broker): before never-held gw-1.
    assert await table.claim("b", SLOTS, 1, LONG) == [SLOTS[1]]


async def test_members_are_counted_while_they_heartbeat(table: PostgresLeaseTable) -> None:
    assert await table.heartbeat("a", LONG) == 2
    await table.leave("b")
    assert await table.heartbeat("a", LONG) == 1
    await table.heartbeat("c", 0.2)
    await eventually(lambda: table.heartbeat("a", LONG), lambda live: live == 1)
