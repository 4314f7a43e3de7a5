"""A PostgreSQL database reached by URL (store_url): a pool of connections, migrated at open.

asyncpg: well kept, fast (binary protocol, native asyncio, a pool of its own), and with
LISTEN/NOTIFY for a fleet of gateways sharing one database (gateway/store/pg_notify.py). A pool, not one
connection: the pipeline's commits, Watch readers and the gRPC calls run side by side.

Every message that names the database shows `display` (the URL without its password).
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg
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


class PgClosed(asyncpg.InterfaceError):
    """The database is not open (before open, after close)."""


def u64(value: Decimal | int) -> int:
    """An unsigned 64-bit column (numeric(20, 0)) as the int it holds."""
    return int(value)


class PgDatabase:
    def __init__(self, *, url: str, name: str, max_size: int = 8) -> None:
        """url: postgresql://user[:password]@host:port/db (checked by the configuration).
        name: the application_name the server shows for these connections."""
        self._url = url
        self.display = redact_url(url)
        self._name = name
        self._max_size = max_size
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
        pool = await asyncpg.create_pool(
            self._url,
            min_size=1,
            max_size=self._max_size,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": self._name},
        )
        try:
            async with pool.acquire() as conn:
                await migrate_postgres(conn, "postgres", self.display)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def probe(self) -> None:
        """One round trip over a pooled connection (availability probe; a connection the
        outage broke is replaced by the pool here, which is how the pool recovers)."""
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
