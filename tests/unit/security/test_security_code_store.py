"""R7: security codes in the ledger's real SQLite database, on a ManualClock: set, change,
reset, the durable lockout, serialised attempts, and deletion with the account (R4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import ManualClock
from gateway.entitlements.ledger_sqlite import SqliteLedger
from gateway.security.code_store import CodeAlreadySet, NoVehicle, SecurityCodes
from gateway.security.codes import Attempt, LockoutPolicy

ACCOUNT = "driver@example.com"
OTHER = "other@example.com"
POLICY = LockoutPolicy(max_failures=5, lockout_s=900.0)


class Opened:
    def __init__(self, ledger: SqliteLedger, codes: SecurityCodes) -> None:
        self.ledger = ledger
        self.codes = codes


async def _open(path: Path, clock: ManualClock) -> Opened:
    ledger = SqliteLedger(path=path)
    await ledger.open()
    # A code belongs to an account that owns a car (SetVehicleOwner, R3).
    await ledger.set_owner("WP0ZZZ99ZPS900001", ACCOUNT)
    await ledger.set_owner("WP0ZZZ99ZPS900002", OTHER)
    return Opened(ledger, SecurityCodes(db=ledger.thread, clock=clock, policy=POLICY))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def db(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Opened]:
    opened = await _open(tmp_path / "entitlements.db", clock)
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


async def test_the_code_is_stored_only_as_a_hash(db: Opened, tmp_path: Path) -> None:
    await db.codes.set_code(ACCOUNT, "47114711", "")
    await db.ledger.close()
    raw = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in tmp_path.glob("entitlements.db*"))
    )
    assert b"47114711" not in raw
    reopened = await _open(tmp_path / "entitlements.db", ManualClock())
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


async def test_the_lockout_survives_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    first = await _open(tmp_path / "entitlements.db", clock)
    await first.codes.set_code(ACCOUNT, "4711", "")
    for _ in range(3):
        await first.codes.check(ACCOUNT, "0000")
    await first.ledger.close()
    second = await _open(tmp_path / "entitlements.db", clock)
    try:
        assert (await second.codes.check(ACCOUNT, "0000")).failures == 4  # the count survived
        await second.codes.check(ACCOUNT, "0000")
        await second.ledger.close()
        third = await _open(tmp_path / "entitlements.db", clock)
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
