"""R7 security code records in the PostgreSQL database (store_url), beside the accounts, on the
ledger's pool: deleting an account (R4) deletes its code in the same transaction.

Several gateways may share the database, so the process's per-account lock is not enough:
`exclusive` holds a session advisory lock keyed by the account on a pooled connection for the
whole attempt (read, slow hash, write). Parallel guesses through different gateways are then
counted one after the other, exactly as within one gateway. The attempt's reads and writes run
on that same connection (a context variable of the task), so attempts in flight never wait for
a second connection from a pool they hold all of.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from gateway.entitlements.ledger import LedgerError
from gateway.security.codes import CodeRecord
from gateway.store.pg import PG_ERRORS, PgConnection, PgDatabase, PgExecutor, describe

T = TypeVar("T")
# Two-key advisory locks (class, hash of the account): apart from the one-key locks elsewhere.
_LOCK_CLASS = 0x5237  # "R7"
# The connection holding the current task's account lock (set inside `exclusive`).
_held: contextvars.ContextVar[PgConnection | None] = contextvars.ContextVar("r7_held", default=None)


class PostgresCodeRecords:
    def __init__(self, db: PgDatabase) -> None:
        """db: the ledger's open database."""
        self._db = db

    def _conn(self) -> PgExecutor:
        return _held.get() or self._db.pool

    async def _run(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except PG_ERRORS as exc:  # the ledger's database: its error, as for every ledger call
            raise LedgerError(f"postgresql {self._db.display}: {describe(exc)}") from exc

    async def read(self, account: str) -> CodeRecord | None:
        async def read() -> CodeRecord | None:
            row = await self._conn().fetchrow(
                "SELECT code_hash, failures, locked_until FROM security_codes WHERE account = $1", account
            )
            if row is None:
                return None
            return CodeRecord(row["code_hash"], int(row["failures"]), float(row["locked_until"]))

        return await self._run(read())

    async def write(self, account: str, record: CodeRecord, now: float) -> bool:
        async def write() -> bool:
            status = await self._conn().execute(
                "INSERT INTO security_codes (account, code_hash, failures, locked_until, updated_at)"
                " SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM vehicle_owners WHERE account = $1)"
                " ON CONFLICT (account) DO UPDATE SET"
                " code_hash = excluded.code_hash, failures = excluded.failures,"
                " locked_until = excluded.locked_until, updated_at = excluded.updated_at",
                account, record.code_hash, record.failures, record.locked_until, now,
            )
            return int(status.split()[-1]) > 0

        return await self._run(write())

    async def delete(self, account: str) -> bool:
        async def delete() -> bool:
            hashes = await self._conn().fetch(
                "DELETE FROM security_codes WHERE account = $1 RETURNING code_hash", account
            )
            return any(r["code_hash"] is not None for r in hashes)

        return await self._run(delete())

    def exclusive(self, account: str) -> AbstractAsyncContextManager[None]:
        return self._exclusive(account)

    @contextlib.asynccontextmanager
    async def _exclusive(self, account: str) -> AsyncIterator[None]:
        try:
            conn = await self._db.pool.acquire()
        except PG_ERRORS as exc:
            raise LedgerError(f"postgresql {self._db.display}: {describe(exc)}") from exc
        try:
            await self._run(conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _LOCK_CLASS, account))
            token = _held.set(conn)
            try:
                yield
            finally:
                _held.reset(token)
                # A lost connection has released its locks already.
                with contextlib.suppress(*PG_ERRORS):
                    await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _LOCK_CLASS, account)
        finally:
            with contextlib.suppress(*PG_ERRORS):
                await self._db.pool.release(conn)
