"""The ingest-slot leases in PostgreSQL (gateway/ingress/slots.py LeaseTable).

Every statement is one atomic round trip judged by the database's clock, so gateways whose
clocks disagree still agree on who holds a slot. A claim takes rows with
`FOR UPDATE SKIP LOCKED` and re-checks expiry on the locked row: of two gateways claiming at
once, each gets different slots, never the same one.

Its own small pool: a renewal must not wait behind the pipeline's commits for a connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.store.pg import PgDatabase, PoolSettings

__all__ = ["PostgresLeaseTable"]

_JOIN_SLOTS = "INSERT INTO ingest_slots (slot) SELECT unnest($1::text[]) ON CONFLICT (slot) DO NOTHING"
# The CTE's insert is invisible to the outer count: count the others, then add ourselves.
_HEARTBEAT = """
WITH me AS (
    INSERT INTO ingest_members (holder, expires_at) VALUES ($1, now() + $2 * interval '1 second')
    ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at
    RETURNING holder
)
SELECT count(*) + 1 FROM ingest_members WHERE expires_at > now() AND holder <> $1
"""
_FORGET_MEMBERS = "DELETE FROM ingest_members WHERE expires_at < now() - interval '1 day'"
_RENEW = """
UPDATE ingest_slots SET expires_at = now() + $3 * interval '1 second'
WHERE holder = $1 AND slot = ANY($2::text[]) AND expires_at > now()
RETURNING slot
"""
# Orphaned slots first (holder set: a session at the broker with a queue), then never-held ones.
_CLAIM = """
UPDATE ingest_slots SET holder = $1, expires_at = now() + $4 * interval '1 second'
WHERE slot IN (
    SELECT slot FROM ingest_slots
    WHERE slot = ANY($2::text[]) AND expires_at <= now()
    ORDER BY holder = '', slot
    LIMIT $3
    FOR UPDATE SKIP LOCKED
) AND expires_at <= now()
RETURNING slot
"""
_RELEASE = "UPDATE ingest_slots SET expires_at = '-infinity' WHERE holder = $1 AND slot = ANY($2::text[])"
_LEAVE = "DELETE FROM ingest_members WHERE holder = $1"


class PostgresLeaseTable:
    def __init__(self, *, url: str, settings: PoolSettings | None = None) -> None:
        """settings: its time limit and metric; the pool is always 2 connections."""
        small = replace(settings or PoolSettings(), max_size=2)
        self.database = PgDatabase(url=url, name="telematics-gateway-leases", settings=small)

    @property
    def display(self) -> str:
        return self.database.display

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    async def join(self, holder: str, slots: Sequence[str], lease_s: float) -> None:
        pool = self.database.pool
        await pool.execute(_JOIN_SLOTS, list(slots))
        await pool.execute(_FORGET_MEMBERS)
        await self.heartbeat(holder, lease_s)

    async def heartbeat(self, holder: str, lease_s: float) -> int:
        return int(await self.database.pool.fetchval(_HEARTBEAT, holder, float(lease_s)))

    async def renew(self, holder: str, slots: Sequence[str], lease_s: float) -> set[str]:
        rows = await self.database.pool.fetch(_RENEW, holder, list(slots), float(lease_s))
        return {str(r["slot"]) for r in rows}

    async def claim(self, holder: str, slots: Sequence[str], count: int, lease_s: float) -> list[str]:
        if count <= 0:
            return []
        rows = await self.database.pool.fetch(_CLAIM, holder, list(slots), count, float(lease_s))
        return sorted(str(r["slot"]) for r in rows)

    async def release(self, holder: str, slots: Sequence[str]) -> None:
        await self.database.pool.execute(_RELEASE, holder, list(slots))

    async def leave(self, holder: str) -> None:
        await self.database.pool.execute(_LEAVE, holder)
