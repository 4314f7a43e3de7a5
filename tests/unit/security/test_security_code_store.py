"""R7: security codes in the ledger's real database (SQLite and PostgreSQL: each test runs on
both, tests/conftest.py), on a ManualClock: set, change, reset, the durable lockout, serialised
attempts, and deletion with the account (R4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from gateway.clock import ManualClock
from gateway.config import Config
from gateway.entitlements.ledger import Ledger
from gateway.security.code_store import CodeAlreadySet, NoVehicle, SecurityCodes
from gateway.security.codes import Attempt, LockoutPolicy
from gateway.store.backends import Backends, build_backends

ACCOUNT = "driver@example.com"
OTHER = "other@example.com"
POLICY = LockoutPolicy(max_failures=5, lockout_s=900.0)
MakeBackends = Callable[[], Backends]


class Opened:
    def __init__(self, ledger: Ledger, codes: SecurityCodes) -> None:
        self.ledger = ledger
        self.codes = codes


async def _open(make: MakeBackends, clock: ManualClock) -> Opened:
    backends = make()
    ledger = backends.ledger
    await ledger.open()
    # A code belongs to an account that owns a car (SetVehicleOwner, R3).
    await ledger.set_owner("WP0ZZZ99ZPS900001", ACCOUNT)
    await ledger.set_owner("WP0ZZZ99ZPS900002", OTHER)
    return Opened(ledger, SecurityCodes(records=backends.code_records, clock=clock, policy=POLICY))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def db(make_backends: MakeBackends, clock: ManualClock) -> AsyncIterator[Opened]:
    opened = await _open(make_backends, clock)
    yield opened
    await opened.ledger.close()


async def test_an_account_without_a_code_is_not_set(db: Opened) -> None:
    assert (await db.codes.check(ACCOUNT, "4711")).attempt is Attempt.NOT_SET
    assert not await db.codes.is_set(ACCOUNT)


async def test_set_then_right_and_wrong_code(db: Opened) -> None:
    assert not (await db.codes.set_code(ACCOUNT, "4711", "")).changed
    assert (await db.codes.check(ACCOUNT, "4711")).attempt is Attempt.OK
    wrong = await db.codes.check(ACCOUNT, "1234")
    assert (wrong.attempt, wrong.failures, wrong.retry_at) == (Attempt.WRONG, 1, 0.0)


async def _everything_stored(store_url: str, tmp_path: Path) -> bytes:
    """Every byte the database holds: the SQLite files, or every row of every PostgreSQL table."""
    if not store_url:
        return await asyncio.to_thread(
            lambda: b"".join(p.read_bytes() for p in tmp_path.glob("entitlements.db*"))
        )
    conn = await asyncpg.connect(store_url)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        rows = [await conn.fetch(f"SELECT t::text AS row FROM {t['tablename']} t") for t in tables]
        return "".join(r["row"] for table in rows for r in table).encode()
    finally:
        await conn.close()


async def test_the_code_is_stored_only_as_a_hash(
    db: Opened, make_backends: MakeBackends, store_url: str, tmp_path: Path
) -> None:
    await db.codes.set_code(ACCOUNT, "47114711", "")
    await db.ledger.close()
    raw = await _everything_stored(store_url, tmp_path)
    assert b"scrypt$" in raw and b"47114711" not in raw
    reopened = await _open(make_backends, ManualClock())
    db.ledger = reopened.ledger  # closed by the fixture
    assert (await reopened.codes.check(ACCOUNT, "47114711")).attempt is Attempt.OK


async def test_a_code_is_changed_only_with_the_old_one(db: Opened) -> None:
    await db.codes.set_code(ACCOUNT, "4711", "")
    with pytest.raises(CodeAlreadySet):
        await db.codes.set_code(ACCOUNT, "1111", "")
    refused = await db.codes.set_code(ACCOUNT, "1111", "9999")
    assert refused.check.attempt is Attempt.WRONG and refused.check.failures == 1
    changed = await db.codes.set_code(ACCOUNT, "1111", "4711")
    assert changed.changed and changed.check.attempt is Attempt.OK
    assert (await db.codes.check(ACCOUNT, "4711")).attempt is Attempt.WRONG
    assert (await db.codes.check(ACCOUNT, "1111")).attempt is Attempt.OK


async def test_five_wrong_codes_lock_even_the_right_code_until_the_lockout_ends(
    db: Opened, clock: ManualClock
) -> None:
    await db.codes.set_code(ACCOUNT, "4711", "")
    results = [await db.codes.check(ACCOUNT, "0000") for _ in range(5)]
    assert [r.attempt for r in results] == [Attempt.WRONG] * 5
    assert [r.retry_at for r in results[:4]] == [0.0] * 4
    assert results[4].retry_at == clock.now() + 900  # the fifth locks
    clock.advance(899)
    locked = await db.codes.check(ACCOUNT, "4711")
    assert locked.attempt is Attempt.LOCKED and locked.retry_at == results[4].retry_at
    clock.advance(1)
    assert (await db.codes.check(ACCOUNT, "4711")).attempt is Attempt.OK
    # The right code cleared the count: four wrong ones do not lock again.
    for _ in range(4):
        assert (await db.codes.check(ACCOUNT, "0000")).attempt is Attempt.WRONG
    assert (await db.codes.check(ACCOUNT, "4711")).attempt is Attempt.OK


async def test_after_a_lockout_a_wrong_code_starts_a_new_series(db: Opened, clock: ManualClock) -> None:
    await db.codes.set_code(ACCOUNT, "4711", "")
    for _ in range(5):
        await db.codes.check(ACCOUNT, "0000")
    clock.advance(900)
    after = await db.codes.check(ACCOUNT, "0000")
    assert (after.attempt, after.failures, after.retry_at) == (Attempt.WRONG, 1, 0.0)


async def test_the_lockout_survives_a_restart(make_backends: MakeBackends, clock: ManualClock) -> None:
    first = await _open(make_backends, clock)
    await first.codes.set_code(ACCOUNT, "4711", "")
    for _ in range(3):
        await first.codes.check(ACCOUNT, "0000")
    await first.ledger.close()
    second = await _open(make_backends, clock)
    try:
        assert (await second.codes.check(ACCOUNT, "0000")).failures == 4  # the count survived
        await second.codes.check(ACCOUNT, "0000")
        await second.ledger.close()
        third = await _open(make_backends, clock)
        second = third
        assert (await third.codes.check(ACCOUNT, "4711")).attempt is Attempt.LOCKED
    finally:
        await second.ledger.close()


async def test_parallel_guesses_cannot_outrun_the_count(db: Opened) -> None:
    await db.codes.set_code(ACCOUNT, "4711", "")
    guesses = [f"{n:04d}" for n in range(20)]  # none is 4711
    results = await asyncio.gather(*(db.codes.check(ACCOUNT, g) for g in guesses))
    attempts = [r.attempt for r in results]
    assert attempts.count(Attempt.WRONG) == 5 and attempts.count(Attempt.LOCKED) == 15


async def test_a_lockout_is_per_account(db: Opened) -> None:
    await db.codes.set_code(ACCOUNT, "4711", "")
    await db.codes.set_code(OTHER, "4711", "")
    for _ in range(5):
        await db.codes.check(ACCOUNT, "0000")
    assert (await db.codes.check(OTHER, "4711")).attempt is Attempt.OK


async def test_reset_clears_the_code_and_the_lockout(db: Opened) -> None:
    await db.codes.set_code(ACCOUNT, "4711", "")
    for _ in range(5):
        await db.codes.check(ACCOUNT, "0000")
    assert await db.codes.reset(ACCOUNT)
    assert not await db.codes.reset(ACCOUNT)  # idempotent
    assert (await db.codes.check(ACCOUNT, "4711")).attempt is Attempt.NOT_SET
    await db.codes.set_code(ACCOUNT, "2222", "")
    assert (await db.codes.check(ACCOUNT, "2222")).attempt is Attempt.OK


async def test_deleting_the_account_deletes_its_code(db: Opened, clock: ManualClock) -> None:
    vin = "WP0ZZZ99ZTS392124"
    await db.ledger.set_owner(vin, ACCOUNT)
    await db.codes.set_code(ACCOUNT, "4711", "")
    await db.ledger.delete_account(ACCOUNT, clock.now())
    assert not await db.codes.is_set(ACCOUNT)


async def test_no_code_is_written_for_an_account_that_owns_no_vehicle_any_more(
    db: Opened, clock: ManualClock
) -> None:
    # DeleteAccount (R4) between SetSecurityCode's ownership check and the write: the write
    # must not bring the erased account's code back.
    await db.ledger.delete_account(ACCOUNT, clock.now())
    with pytest.raises(NoVehicle):
        await db.codes.set_code(ACCOUNT, "4711", "")
    assert not await db.codes.is_set(ACCOUNT)


async def test_parallel_guesses_through_two_gateways_sharing_postgresql_cannot_outrun_the_count(
    pg_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    # Two gateways (two pools, two SecurityCodes with their own per-process locks) on one database.
    config = Config(data_dir=str(tmp_path), store_url=pg_url)
    gateways = [await _open(lambda: build_backends(config), clock) for _ in range(2)]
    try:
        await gateways[0].codes.set_code(ACCOUNT, "4711", "")
        guesses = [f"{n:04d}" for n in range(20)]
        results = await asyncio.gather(
            *(gateways[i % 2].codes.check(ACCOUNT, g) for i, g in enumerate(guesses))
        )
        attempts = [r.attempt for r in results]
        assert attempts.count(Attempt.WRONG) == 5 and attempts.count(Attempt.LOCKED) == 15
    finally:
        for g in gateways:
            await g.ledger.close()
