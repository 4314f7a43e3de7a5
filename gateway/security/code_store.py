"""R7: security codes kept in the ledger's database, beside the accounts they belong to
(vehicle_owners): deleting an account (R4) deletes its code in the same transaction, and every
acknowledged set, change, reset and counted failure is committed before it is answered. Where
the records live is behind `CodeRecords` (gateway/security/code_records.py).

The failure count and the lockout are durable on purpose: restarting (or crashing) the gateway
must not give an attacker a fresh series of guesses. Attempts on one account are serialised
(an asyncio lock per account, and the records' own `exclusive` for gateways sharing one
database), so parallel guesses cannot all be checked before the first failure is counted.
The slow hash runs in a worker thread, never on the event loop or a database thread, and
before the attempt takes its lock: on PostgreSQL the lock holds a pooled connection, which
must not sit idle through ~50 ms of hashing per attempt (a burst of attempts would drain the
ledger's pool). The attempt then re-reads the record under the lock and judges it there
(lockout, counting); only if the code itself changed meanwhile is the hash run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.security.code_records import CodeRecords
from gateway.security.codes import (
    Attempt,
    CodeRecord,
    LockoutPolicy,
    hash_code,
    verify_code,
)

__all__ = ["CheckResult", "CodeAlreadySet", "SecurityCodes", "SetResult"]

@dataclass(frozen=True, slots=True)
class CheckResult:
    attempt: Attempt
    # LOCKED, or WRONG when this wrong code started a lockout: when it ends (unix seconds).
    retry_at: float = 0.0
    failures: int = 0  # WRONG: wrong codes in a row so far


@dataclass(frozen=True, slots=True)
class SetResult:
    changed: bool  # True: an existing code was replaced; False: the first code was set
    check: CheckResult  # OK, or why the old code was refused


@dataclass(frozen=True, slots=True)
class _Verified:
    code_hash: str | None  # the stored hash the code was compared with; None: not compared
    right: bool


class CodeAlreadySet(Exception):
    """SetSecurityCode without the old code while one is set."""


class NoVehicle(Exception):
    """The account owns no vehicle (any more): a code belongs to an account with a car (R7)."""


class SecurityCodes:
    def __init__(self, *, records: CodeRecords, clock: Clock, policy: LockoutPolicy) -> None:
        """records: where the codes live (the ledger's database). clock: every lockout
        decision asks it."""
        self._records = records
        self._clock = clock
        self._policy = policy
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def _serial(self, account: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(account, (asyncio.Lock(), 0))
        self._locks[account] = (lock, users + 1)
        try:
            async with lock, self._records.exclusive(account):
                yield
        finally:
            lock, users = self._locks[account]
            if users == 1:
                del self._locks[account]  # no dict entry per account ever tried
            else:
                self._locks[account] = (lock, users - 1)

    async def _read(self, account: str) -> CodeRecord | None:
        return await self._records.read(account)

    async def _write(self, account: str, record: CodeRecord) -> bool:
        """Store `record`; False (nothing written) when the account owns no vehicle any more."""
        return await self._records.write(account, record, self._clock.now())

    async def _verify_unlocked(self, account: str, code: str) -> _Verified:
        """Before the account's lock: the stored hash and whether `code` matches it (nothing
        hashed when there is no code or the account is locked: a locked account costs no CPU)."""
        record = await self._read(account)
        if record is None or record.code_hash is None or record.locked_at(self._clock.now()):
            return _Verified(None, False)
        return _Verified(record.code_hash, await asyncio.to_thread(verify_code, code, record.code_hash))

    async def _check_locked(
        self, account: str, code: str, verified: _Verified
    ) -> tuple[CheckResult, CodeRecord | None]:
        """The check itself on the record as it is now; the caller holds the account's lock.
        `verified`: the hash comparison done before the lock, reused when the code is the same."""
        record = await self._read(account)
        if record is None or record.code_hash is None:
            return CheckResult(Attempt.NOT_SET), record
        now = self._clock.now()
        if record.locked_at(now):
            # Refused whatever the code: not even a right guess is confirmed while locked.
            return CheckResult(Attempt.LOCKED, retry_at=record.locked_until), record
        record = record.settled(now)
        stored = record.code_hash
        assert stored is not None
        right = verified.right
        if verified.code_hash != stored:  # set or changed meanwhile (rare): judge the new one
            right = await asyncio.to_thread(verify_code, code, stored)
        if right:
            record = record.after_right()
            await self._write(account, record)
            return CheckResult(Attempt.OK), record
        # Judged at the time of the answer: the hash took a moment of (possibly manual) time.
        record = record.after_wrong(self._clock.now(), self._policy)
        await self._write(account, record)
        # The wrong code that reaches the limit is still answered as wrong; retry_at says that
        # the account is locked from now on.
        return CheckResult(Attempt.WRONG, retry_at=record.locked_until, failures=record.failures), record

    async def check(self, account: str, code: str) -> CheckResult:
        """R7: is `code` the account's security code? Wrong codes are counted; the one that
        reaches the limit locks the account (its result carries the retry time)."""
        verified = await self._verify_unlocked(account, code)
        async with self._serial(account):
            result, _ = await self._check_locked(account, code, verified)
            return result

    async def is_set(self, account: str) -> bool:
        record = await self._read(account)
        return record is not None and record.code_hash is not None

    async def set_code(self, account: str, new_code: str, old_code: str) -> SetResult:
        """Set the first code (`old_code` empty), or change it (`old_code` must be right; a
        wrong one counts towards the lockout like any wrong code). CodeAlreadySet when a code
        is set and `old_code` is empty."""
        new_hash = await asyncio.to_thread(hash_code, new_code)
        verified = await self._verify_unlocked(account, old_code) if old_code else _Verified(None, False)
        async with self._serial(account):
            record = await self._read(account)
            if record is None or record.code_hash is None:
                if not await self._write(account, CodeRecord(code_hash=new_hash)):
                    raise NoVehicle
                return SetResult(changed=False, check=CheckResult(Attempt.OK))
            if not old_code:
                raise CodeAlreadySet
            result, record = await self._check_locked(account, old_code, verified)
            changed = result.attempt is Attempt.OK
            if changed and not await self._write(account, CodeRecord(code_hash=new_hash)):
                raise NoVehicle
            return SetResult(changed=True, check=result)

    async def reset(self, account: str) -> bool:
        """Clear the code and its failure count and lockout, so the user can set a new one
        (R7). True when there was a code."""
        async with self._serial(account):
            return await self._records.delete(account)
