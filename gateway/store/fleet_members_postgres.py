"""The live gateways sharing one PostgreSQL database: the members of the ingest slots
(`ingest_members`, heartbeated by each gateway, gateway/store/slot_leases_postgres.py), live
while their heartbeat has not expired by the database's clock."""

from __future__ import annotations

from gateway.store.pg import PgDatabase

__all__ = ["PostgresMembers"]

_LIVE = "SELECT holder FROM ingest_members WHERE expires_at > now() ORDER BY holder"


class PostgresMembers:
    def __init__(self, database: PgDatabase) -> None:
        """database: an open pool on the shared database (the ledger's)."""
        self._db = database

    async def live(self) -> list[str]:
        return [str(r["holder"]) for r in await self._db.pool.fetch(_LIVE)]
