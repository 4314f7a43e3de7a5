"""R7 security code records in the ledger's SQLite database (`entitlements.db`), on its thread:
deleting an account (R4) deletes its code in the same transaction. The embedded database has
one gateway process, so the process's own per-account lock is all the exclusion needed."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from gateway.entitlements.ledger import LedgerError
from gateway.security.codes import CodeRecord
from gateway.store.sqlite_thread import SqliteThread

T = TypeVar("T")


class SqliteCodeRecords:
    def __init__(self, db: SqliteThread) -> None:
        """db: the ledger's open database thread."""
        self._db = db

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, transaction: bool = False) -> T:
        try:
            return await (self._db.transaction(fn) if transaction else self._db.run(fn))
        except sqlite3.Error as exc:  # the ledger's database: its error, as for every ledger call
            raise LedgerError(f"sqlite {self._db.path}: {exc}") from exc

    async def read(self, account: str) -> CodeRecord | None:
        def read(db: sqlite3.Connection) -> CodeRecord | None:
            row = db.execute(
                "SELECT code_hash, failures, locked_until FROM security_codes WHERE account = ?",
                (account,),
            ).fetchone()
            return None if row is None else CodeRecord(row[0], int(row[1]), float(row[2]))

        return await self._run(read)

    async def write(self, account: str, record: CodeRecord, now: float) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT INTO security_codes (account, code_hash, failures, locked_until, updated_at)"
                " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM vehicle_owners WHERE account = ?)"
                " ON CONFLICT(account) DO UPDATE SET"
                " code_hash = excluded.code_hash, failures = excluded.failures,"
                " locked_until = excluded.locked_until, updated_at = excluded.updated_at",
                (account, record.code_hash, record.failures, record.locked_until, now, account),
            )
            return cur.rowcount > 0

        return await self._run(write, transaction=True)

    async def delete(self, account: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT code_hash FROM security_codes WHERE account = ?", (account,)
            ).fetchone()
            db.execute("DELETE FROM security_codes WHERE account = ?", (account,))
            return row is not None and row[0] is not None

        return await self._run(delete, transaction=True)

    def exclusive(self, account: str) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()
