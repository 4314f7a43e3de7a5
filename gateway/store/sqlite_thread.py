"""One SQLite connection owned by one thread, shared by the SQLite store and ledger.

sqlite3 connections must not be shared across threads, and a single writer is what SQLite does
best. WAL with synchronous=NORMAL survives a crash of the gateway process (what "nothing lost"
is about); only an OS crash or power loss may drop the last transactions. sqlite3.Error passes
through: each caller maps it to its own domain error.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.store.migrate import migrate_sqlite

T = TypeVar("T")

# SQLite integers are signed 64-bit: no rowid (cursor) is ever above this, and binding a larger
# Python int raises OverflowError. Cursors on the wire are uint64, so readers clamp to it.
MAX_INTEGER = 2**63 - 1
# How long a statement waits for another connection's write lock before "database is locked".
BUSY_TIMEOUT_MS = 5000
PROBE_BUSY_MS = 100  # the availability probe's wait (gateway/store/availability.py)


def cursor_arg(after: int) -> int:
    """A client's `after` cursor as a bindable value with the same meaning: every cursor above
    MAX_INTEGER is beyond every row there can ever be."""
    return min(after, MAX_INTEGER)


def first_cursor(db: sqlite3.Connection, table: str) -> int:
    """The oldest retained cursor of an event table (0 when it is empty). `table` is a constant
    of the caller, never input."""
    row = db.execute(f"SELECT MIN(cursor) FROM {table}").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# Rows one prune step deletes: the database thread runs one step at a time, so the readiness
# probe and the pipeline's commits queued meanwhile wait for one step, never a whole prune.
PRUNE_CHUNK = 5000


def prune_step(db: sqlite3.Connection, table: str, keep: int, limit: int = PRUNE_CHUNK) -> int:
    """Delete the oldest cursors of an event table beyond the newest `keep`, at most `limit`;
    the number deleted (below `limit`: nothing more to prune). AUTOINCREMENT never reuses a
    pruned cursor, so a pruned one is always recognised."""
    row = db.execute(f"SELECT MAX(cursor) FROM {table}").fetchone()
    if not row or row[0] is None:
        return 0
    return db.execute(
        f"DELETE FROM {table} WHERE cursor IN"
        f" (SELECT cursor FROM {table} WHERE cursor <= ? ORDER BY cursor LIMIT ?)",
        (int(row[0]) - keep, limit),
    ).rowcount


async def prune_keeping(
    step: Callable[[Callable[[sqlite3.Connection], int]], Awaitable[int]],
    table: str,
    keep: int,
    limit: int = PRUNE_CHUNK,
) -> int:
    """Delete all but the newest `keep` cursors of an event table, one `prune_step` per job
    of the database thread (`step` runs one: SqliteThread.run or a transaction); the number
    deleted."""
    total = 0
    while True:
        deleted = await step(lambda db: prune_step(db, table, keep, limit))
        total += deleted
        if deleted < limit:
            return total


class SqliteClosed(sqlite3.Error):
    """The connection is not open (before open, after close)."""


class SqliteThread:
    def __init__(self, *, path: Path, migrations: str, name: str) -> None:
        """path: the database file (its directory is created). migrations: the folder of
        gateway/store/migrations applied at open (gateway/store/migrate.py). name: the thread's
        name prefix, for stack dumps."""
        self.path = path
        self._migrations = migrations
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            try:
                migrate_sqlite(db, self._migrations, str(self.path))
            except BaseException:
                db.close()
                raise
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise SqliteClosed(f"{self.path} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    async def transaction(
        self, fn: Callable[[sqlite3.Connection], T], after_commit: Callable[[], None] | None = None
    ) -> T:
        """Run `fn` inside BEGIN IMMEDIATE ... COMMIT; any exception rolls back. `after_commit`
        runs on the database thread once the COMMIT succeeded, before any later call starts:
        what it remembers about the database is never seen by a call that ran before it."""

        def tx(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if after_commit is not None:
                after_commit()
            return result

        return await self.run(tx)

    async def probe_write(self) -> None:
        """Take the write lock and give it back at once (availability probe): raises
        sqlite3.OperationalError ("database is locked") when another connection holds it. Waits
        at most PROBE_BUSY_MS for it, not the commits' busy_timeout, and restores that."""

        def probe(db: sqlite3.Connection) -> None:
            db.execute(f"PRAGMA busy_timeout={PROBE_BUSY_MS}")
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            finally:
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

        await self.run(probe)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)
