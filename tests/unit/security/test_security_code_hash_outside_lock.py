"""R7 attempts hash before they take the account's lock (gateway/security/code_store.py): on
PostgreSQL that lock holds a pooled connection, which must not sit idle through the slow hash.
An in-memory CodeRecords (the Protocol) says whether it was held when the hash ran."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from gateway.clock import ManualClock
from gateway.security import code_store
from gateway.security.code_records import CodeRecords
from gateway.security.code_store import SecurityCodes
from gateway.security.codes import Attempt, CodeRecord, LockoutPolicy, hash_code, verify_code

ACCOUNT = "owner@example.com"


class MemoryCodeRecords:
    def __init__(self) -> None:
        self.records: dict[str, CodeRecord] = {}
        self.held = False
        self.on_exclusive: Callable[[], None] | None = None  # runs as the lock is taken

    async def read(self, account: str) -> CodeRecord | None:
        return self.records.get(account)

    async def write(self, account: str, record: CodeRecord, now: float) -> bool:
        self.records[account] = record
        return True

    async def delete(self, account: str) -> bool:
        return self.records.pop(account, None) is not None

    def exclusive(self, account: str) -> AbstractAsyncContextManager[None]:
        return self._exclusive()

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        self.held = True
        if self.on_exclusive is not None:
            self.on_exclusive()
        try:
            yield
        finally:
            self.held = False


@pytest.fixture
def records() -> MemoryCodeRecords:
    return MemoryCodeRecords()


@pytest.fixture
def hashed_while_held(records: MemoryCodeRecords, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each hash comparison of an attempt: whether the records' lock was held then."""
    seen: list[bool] = []

    def spy(code: str, stored: str) -> bool:
        seen.append(records.held)
        return verify_code(code, stored)

    monkeypatch.setattr(code_store, "verify_code", spy)
    return seen


def codes_on(records: CodeRecords) -> SecurityCodes:
    return SecurityCodes(records=records, clock=ManualClock(start=1000.0), policy=LockoutPolicy(3, 60.0))


async def test_checking_a_code_hashes_before_the_account_lock_is_taken(
    records: MemoryCodeRecords, hashed_while_held: list[bool]
) -> None:
    codes = codes_on(records)
    assert (await codes.set_code(ACCOUNT, "123456", "")).check.attempt is Attempt.OK
    assert (await codes.check(ACCOUNT, "123456")).attempt is Attempt.OK
    wrong = await codes.check(ACCOUNT, "654321")
    assert (wrong.attempt, wrong.failures) == (Attempt.WRONG, 1)
    changed = await codes.set_code(ACCOUNT, "111111", "123456")
    assert changed.changed and changed.check.attempt is Attempt.OK
    assert hashed_while_held == [False, False, False]


async def test_a_code_changed_between_the_hash_and_the_lock_is_judged_against_the_new_one(
    records: MemoryCodeRecords, hashed_while_held: list[bool]
) -> None:
    codes = codes_on(records)
    await codes.set_code(ACCOUNT, "123456", "")
    new_hash = hash_code("222222")
    records.on_exclusive = lambda: records.records.update({ACCOUNT: CodeRecord(code_hash=new_hash)})
    assert (await codes.check(ACCOUNT, "123456")).attempt is Attempt.WRONG  # right for the old one
    assert hashed_while_held == [False, True]  # the rare second hash, under the lock


async def test_a_locked_account_costs_no_hash(
    records: MemoryCodeRecords, hashed_while_held: list[bool]
) -> None:
    codes = codes_on(records)
    await codes.set_code(ACCOUNT, "123456", "")
    for _ in range(3):
        await codes.check(ACCOUNT, "000000")
    hashed_while_held.clear()
    assert (await codes.check(ACCOUNT, "123456")).attempt is Attempt.LOCKED
    assert hashed_while_held == []
