"""PostgreSQL vehicle store (store_url): the same observable behaviour as the SQLite store.

Unsigned 64-bit values are numeric(20, 0) columns (SQLite needed them as 8-byte blobs); event
cursors are handed out in commit order (gateway/store/pg_outbox.py), so a Watch reader that
moves past a cursor never misses an event committed later with a lower one. A snapshot is
written only over the row version this store last read or wrote (gateway/store/versions.py):
this store's commits take turns (a lock), so its own writes never refuse each other.

Several gateways write the same cars (a car's messages reach any of them), so this is a
SharedStore: `fresh_sessions` hands the pipeline the cars another gateway wrote since this one
last read or wrote them (one query per batch), and a batch with a snapshot over such a car
raises StoreConflict and is rolled back whole, its events with it; the pipeline then applies
it again on the stored state. A snapshot is never skipped here: that would lose the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import asyncpg

from gateway._gen.telematics.v1 import vehicles_pb2
from gateway.convert import SequenceExtra, vehicle_from_proto, vehicle_to_proto
from gateway.model import VehicleSession
from gateway.store import pg_outbox
from gateway.store.base import PendingEvent, StoreConflict, StoredEvent, StoreError
from gateway.store.pg import OPEN_ERRORS, PG_ERRORS, PgConnection, PgDatabase, PoolSettings, describe, u64
from gateway.store.pg_outbox import VEHICLE_EVENTS
from gateway.store.versions import KnownVersions

T = TypeVar("T")

_UPSERT = (
    "INSERT INTO vehicles (vin, snapshot, connection_id, seen_window, previous_epoch,"
    " previous_last_sequence, previous_seen_window, last_sequence, last_seen_at, version)"
    " SELECT * FROM unnest($1::text[], $2::bytea[], $3::numeric[], $4::numeric[], $5::numeric[],"
    " $6::numeric[], $7::numeric[], $8::numeric[], $9::float8[], $10::bigint[])"
    " ON CONFLICT (vin) DO UPDATE SET snapshot = excluded.snapshot,"
    " connection_id = excluded.connection_id, seen_window = excluded.seen_window,"
    " previous_epoch = excluded.previous_epoch, previous_last_sequence = excluded.previous_last_sequence,"
    " previous_seen_window = excluded.previous_seen_window, last_sequence = excluded.last_sequence,"
    " last_seen_at = excluded.last_seen_at, version = excluded.version"
    # Written when new, or when still at the version before this one.
    " WHERE vehicles.version = excluded.version - 1"
    " RETURNING vin, version"
)

# Only the sequence moved since the stored snapshot (VehicleSession.snapshot_stale clear): the
# columns that override the snapshot's, under the same version rule.
_NARROW = (
    "UPDATE vehicles v SET seen_window = k.seen_window, last_sequence = k.last_sequence,"
    " last_seen_at = k.last_seen_at, version = k.version"
    " FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::float8[], $5::bigint[])"
    " AS k(vin, seen_window, last_sequence, last_seen_at, version)"
    " WHERE v.vin = k.vin AND v.version = k.version - 1"
    " RETURNING v.vin, v.version"
)

# A batch with both kinds takes the row locks of its stored cars first, in VIN order, so that
# two gateways committing overlapping cars wait for each other instead of deadlocking (the two
# statements would otherwise lock in two sweeps).
_LOCK = "SELECT vin FROM vehicles WHERE vin = ANY($1::text[]) ORDER BY vin FOR UPDATE"


_SESSION_COLUMNS = (
    "snapshot, connection_id, seen_window, previous_epoch, previous_last_sequence, previous_seen_window,"
    " last_sequence, last_seen_at"
)

# The rows of the given cars whose version is not the one this gateway knows (NULL: it never
# saw the car, so any stored row is news). Served by the primary key, one round trip a batch.
_FRESH = (
    "SELECT v.vin, v.version, v.snapshot, v.connection_id, v.seen_window, v.previous_epoch,"
    " v.previous_last_sequence, v.previous_seen_window, v.last_sequence, v.last_seen_at"
    " FROM unnest($1::text[], $2::bigint[]) AS k(vin, known) JOIN vehicles v ON v.vin = k.vin"
    " WHERE v.version IS DISTINCT FROM k.known"
)


def _session(r: asyncpg.Record) -> VehicleSession:
    """A session from a row with _SESSION_COLUMNS: the snapshot, with the sequence written
    after it (narrow updates) where there is one."""
    s = vehicle_from_proto(
        vehicles_pb2.Vehicle.FromString(r["snapshot"]),
        connection_id=u64(r["connection_id"]),
        sequence=SequenceExtra(
            u64(r["seen_window"]),
            u64(r["previous_epoch"]),
            u64(r["previous_last_sequence"]),
            u64(r["previous_seen_window"]),
        ),
    )
    if r["last_sequence"] is not None:
        s.last_sequence = u64(r["last_sequence"])
    if r["last_seen_at"] is not None:
        s.last_seen_at = float(r["last_seen_at"])
    return s


class PostgresStore:
    def __init__(self, *, url: str, settings: PoolSettings | None = None) -> None:
        """url: postgresql://user@host:port/db; the schema is migrated at open."""
        self._db = PgDatabase(url=url, name="gateway-store", settings=settings)
        self._versions = KnownVersions()
        self._commit_lock = asyncio.Lock()

    @property
    def stale_snapshots(self) -> int:
        """Snapshots not written because the stored row was newer (another gateway's)."""
        return self._versions.stale

    @property
    def display(self) -> str:
        return self._db.display

    @property
    def is_open(self) -> bool:
        return self._db.is_open

    async def _run(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except PG_ERRORS as exc:
            raise StoreError(f"postgresql {self.display}: {describe(exc)}") from exc

    async def open(self) -> None:
        try:
            await self._db.open()
        except OPEN_ERRORS as exc:
            raise StoreError(f"cannot open postgresql database {self.display}: {exc}") from exc

    async def close(self) -> None:
        await self._db.close()

    async def probe(self) -> None:
        await self._run(self._db.probe())

    async def load_sessions(self) -> list[VehicleSession]:
        async def load() -> list[VehicleSession]:
            rows = await self._db.pool.fetch(f"SELECT {_SESSION_COLUMNS}, vin, version FROM vehicles")
            self._versions.reset({r["vin"]: int(r["version"]) for r in rows})
            return [_session(r) for r in rows]

        return await self._run(load())

    async def get_vehicle(self, vin: str) -> VehicleSession | None:
        async def read() -> VehicleSession | None:
            row = await self._db.pool.fetchrow(f"SELECT {_SESSION_COLUMNS} FROM vehicles WHERE vin = $1", vin)
            return None if row is None else _session(row)

        return await self._run(read())

    async def list_vehicles(self, after: str, limit: int) -> list[VehicleSession]:
        # The primary key's index serves the range and the order. Its collation is the
        # database's, which orders VINs (upper-case letters and digits only) as Python does.
        async def read() -> list[VehicleSession]:
            rows = await self._db.pool.fetch(
                f"SELECT {_SESSION_COLUMNS} FROM vehicles WHERE vin > $1 ORDER BY vin LIMIT $2", after, limit
            )
            return [_session(r) for r in rows]

        return await self._run(read())

    async def fresh_sessions(self, vins: Sequence[str], *, every: bool = False) -> list[VehicleSession]:
        if not vins:
            return []
        async with self._commit_lock:  # the known versions change only between commits
            known = [None if every else self._versions.expected(v) for v in vins]
            rows = await self._run(self._db.pool.fetch(_FRESH, list(vins), known))
            self._versions.refreshed({r["vin"]: int(r["version"]) for r in rows})
        return [_session(r) for r in rows]

    async def commit_batch(
        self, vehicles: Sequence[VehicleSession], events: Sequence[PendingEvent]
    ) -> list[StoredEvent]:
        """Raises StoreConflict, writing nothing, when a car of `vehicles` was written by another
        gateway since this store last read or wrote it."""
        # Serialize on the event loop: sessions are mutated there and must be read there.
        # In VIN order: every gateway locks the rows it upserts in the same order, so two
        # gateways committing overlapping cars wait for each other instead of deadlocking.
        # A car stored by this store whose session changed only in its sequence since the
        # snapshot was taken gets the narrow update (no snapshot serialized).
        vehicles = sorted(vehicles, key=lambda v: v.vin)
        full: tuple[list[object], ...] = ([], [], [], [], [], [], [], [], [])
        narrow: tuple[list[object], ...] = ([], [], [], [])
        taken: list[VehicleSession] = []  # snapshots taken now: stale again unless committed
        for s in vehicles:
            if s.snapshot_stale or self._versions.expected(s.vin) is None:
                s.snapshot_stale = False
                taken.append(s)
                values: tuple[object, ...] = (
                    s.vin, vehicle_to_proto(s).SerializeToString(), s.connection_id, s.seen_window,
                    s.previous_epoch, s.previous_last_sequence, s.previous_seen_window,
                    s.last_sequence, s.last_seen_at,
                )
                columns = full
            else:
                values, columns = (s.vin, s.seen_window, s.last_sequence, s.last_seen_at), narrow
            for column, value in zip(columns, values, strict=True):
                column.append(value)

        async with self._commit_lock:
            # The versions are read under the lock: fresh_sessions moves them between commits.
            expected = self._versions.expected
            versions = [[(expected(str(vin)) or 0) + 1 for vin in columns[0]] for columns in (full, narrow)]
            try:
                written, stored = await self._run(self._commit(full, narrow, versions, events))
            except BaseException as exc:
                for s in taken:  # not stored: the next commit writes the whole row again
                    s.snapshot_stale = True
                if isinstance(exc, StoreConflict):
                    self._versions.stale += len(exc.vins)
                raise
            self._versions.written(written)  # committed
        return stored

    async def _commit(
        self,
        full: tuple[list[object], ...],
        narrow: tuple[list[object], ...],
        versions: list[list[int]],
        events: Sequence[PendingEvent],
    ) -> tuple[dict[str, int], list[StoredEvent]]:
        """One transaction: the snapshots (whole rows, then the narrow ones), each over its
        expected version, then the events; the versions written and the events stored. A row
        refused by its version raises StoreConflict, which rolls the transaction back."""
        async with self._db.pool.acquire() as conn, conn.transaction():
            written: dict[str, int] = {}
            full_versions, narrow_versions = versions
            # An UPDATE ... FROM unnest locks its rows in the plan's order, not the VINs': with
            # more than one narrow row, every row is locked in VIN order first, so two gateways
            # writing overlapping cars wait for each other instead of deadlocking.
            if narrow_versions and (full_versions or len(narrow_versions) > 1):
                await conn.execute(_LOCK, sorted(str(vin) for vin in (*full[0], *narrow[0])))
            for sql, columns, vers in ((_UPSERT, full, full_versions), (_NARROW, narrow, narrow_versions)):
                if not vers:
                    continue
                rows = await conn.fetch(sql, *columns, vers)
                written.update((r["vin"], int(r["version"])) for r in rows)
                refused = [str(v) for v in columns[0] if v not in written]
                if refused:
                    raise StoreConflict(refused)
            fresh = await self._first_seen(conn, events)
            kept = [e for e in events if not e.dedupe_key or fresh.pop((e.vin, e.dedupe_key), False)]
            cursors = await pg_outbox.append(conn, VEHICLE_EVENTS, [(e.vin, e.kind, e.payload) for e in kept])
            stored = [StoredEvent(c, e.vin, e.payload, e.kind) for c, e in zip(cursors, kept, strict=True)]
            return written, stored

    @staticmethod
    async def _first_seen(
        conn: PgConnection, events: Sequence[PendingEvent]
    ) -> dict[tuple[str, str], bool]:
        """The (vin, dedupe key) pairs of `events` never seen before, now recorded (R28)."""
        # Sorted, as the snapshots: the same lock order on the unique index in every gateway.
        keyed = sorted((e for e in events if e.dedupe_key), key=lambda e: (e.vin, e.dedupe_key))
        if not keyed:
            return {}
        rows = await conn.fetch(
            "INSERT INTO event_dedupe (vin, key) SELECT * FROM unnest($1::text[], $2::text[])"
            " ON CONFLICT DO NOTHING RETURNING vin, key",
            [e.vin for e in keyed],
            [e.dedupe_key for e in keyed],
        )
        return {(r["vin"], r["key"]): True for r in rows}

    async def read_events(self, after: int, limit: int, vin: str = "") -> list[StoredEvent]:
        async def read() -> list[StoredEvent]:
            rows = await pg_outbox.read(self._db.pool, VEHICLE_EVENTS, after, limit, vin)
            return [StoredEvent(int(r["cursor"]), r["vin"], r["payload"]) for r in rows]

        return await self._run(read())

    async def first_cursor(self) -> int:
        return await self._run(self._first_cursor())

    async def _first_cursor(self) -> int:
        return await pg_outbox.first_cursor(self._db.pool, VEHICLE_EVENTS)

    async def prune_events(self, keep: int) -> int:
        return await self._run(self._prune(keep))

    async def _prune(self, keep: int) -> int:
        return await pg_outbox.prune_keeping(self._db.pool, VEHICLE_EVENTS, keep)
