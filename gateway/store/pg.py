"""A PostgreSQL database reached by URL (store_url): a pool of connections, migrated at open.

asyncpg: well kept, fast (binary protocol, native asyncio, a pool of its own), and with
LISTEN/NOTIFY for a fleet of gateways sharing one database (gateway/store/pg_notify.py). A pool, not one
connection: the pipeline's commits, Watch readers and the gRPC calls run side by side.

Every message that names the database shows `display` (the URL without its password).

Every statement of a pool has a time limit (`store_command_timeout_s`): a statement PostgreSQL
does not answer (a lock held elsewhere, a server that hangs) raises TimeoutError, an OSError, so
it takes the path of every failed database call (PG_ERRORS: StoreError / LedgerError, the
pipeline's retry with backoff, /readyz not ready, UNAVAILABLE for a gRPC call) instead of
blocking its caller for ever. Each one is counted (`on_timeout`). Migrations run at open on a
connection of their own without that limit: building an index over a large table may take
longer than any statement of normal work should.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
from asyncpg.connection import LoggedQuery
from asyncpg.pool import PoolConnectionProxy

from gateway.redact import redact_url
from gateway.store.migrate import MigrationError, migrate_postgres

# What a failed database call raises: the server refused (PostgresError), the connection or
# pool is gone or closed (InterfaceError), the network failed or timed out (OSError).
PG_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
# What a failed open raises besides: a schema this code cannot use (gateway/store/migrate.py).
OPEN_ERRORS = (*PG_ERRORS, MigrationError)
# A connection of the pool or one of its own; and anything that runs a query (the pool too).
PgConnection = asyncpg.Connection | PoolConnectionProxy
PgExecutor = PgConnection | asyncpg.Pool
CONNECT_TIMEOUT_S = 10.0
DEFAULT_POOL_SIZE = 8
DEFAULT_COMMAND_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """max_size: connections of the pool. command_timeout_s: the limit of every statement.
    on_timeout: called once for each statement that ran into it (a metric)."""

    max_size: int = DEFAULT_POOL_SIZE
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    on_timeout: Callable[[], None] | None = None


class PgClosed(asyncpg.InterfaceError):
    """The database is not open (before open, after close)."""


def describe(error: BaseException) -> str:
    """An error of a database call for a message (asyncpg's TimeoutError has no text)."""
    if isinstance(error, TimeoutError):
        return "no answer within store_command_timeout_s (statement cut off)"
    return str(error) or type(error).__name__


def u64(value: Decimal | int) -> int:
    """An unsigned 64-bit column (numeric(20, 0)) as the int it holds."""
    return int(value)


class PgDatabase:
    def __init__(self, *, url: str, name: str, settings: PoolSettings | None = None) -> None:
        """url: postgresql://user[:password]@host:port/db (checked by the configuration).
        name: the application_name the server shows for these connections."""
        self._url = url
        self.display = redact_url(url)
        self._name = name
        self.settings = settings or PoolSettings()
        self._pool: asyncpg.Pool | None = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise PgClosed(f"{self.display} is closed")
        return self._pool

    async def open(self) -> None:
        """Connect and bring the schema to this code's version (MigrationError otherwise)."""
        server_settings = {"application_name": self._name}
        conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_S, server_settings=server_settings)
        try:
            await migrate_postgres(conn, "postgres", self.display)
        finally:
            await conn.close()
        settings = self.settings
        self._pool = await asyncpg.create_pool(
            self._url,
            min_size=1,
            max_size=settings.max_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=settings.command_timeout_s,
            server_settings=server_settings,
            init=self._watch_timeouts if settings.on_timeout is not None else None,
        )

    async def _watch_timeouts(self, conn: asyncpg.Connection) -> None:
        """Pool init: every statement of the connection reports its outcome to _logged."""
        conn.add_query_logger(self._logged)

    def _logged(self, record: LoggedQuery) -> None:
        # Only the kind of the outcome is looked at: the statement's arguments (a code hash, a
        # car's position) never leave this function.
        if isinstance(record.exception, TimeoutError) and self.settings.on_timeout is not None:
            self.settings.on_timeout()

    async def probe(self) -> None:
        """One round trip over a pooled connection (availability probe; a connection the
        outage broke is replaced by the pool here, which is how the pool recovers)."""
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
