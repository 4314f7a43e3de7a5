"""SQLite store for the embedded deployment (one thread, WAL: see sqlite_thread.py).

A snapshot is written only over the row version this store last read or wrote
(gateway/store/versions.py); the versions are kept on the database thread. A refused snapshot
is skipped (logged and counted) and its batch's events still written; it cannot happen in a
deployment: the file belongs to one gateway (its data_dir; several gateways need store_url), and
that gateway's pipeline is the one writer of its snapshots, one batch after the other, so what
it last wrote is always what is stored. Hence no refresh before a batch either (not a
SharedStore): the gateway's memory is the whole truth, at no extra query.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway._gen.telematics.v1 import vehicles_pb2
from gateway.convert import SequenceExtra, vehicle_from_proto, vehicle_to_proto
from gateway.model import VehicleSession
from gateway.store.base import PendingEvent, StoredEvent, StoreError
from gateway.store.migrate import MigrationError
from gateway.store.sqlite_thread import PRUNE_CHUNK, SqliteThread, cursor_arg, first_cursor, prune_keeping
from gateway.store.versions import KnownVersions

T = TypeVar("T")
log = logging.getLogger(__name__)

# The row is written when new, or when it is still at the version before this one.
_UPSERT = (
    "INSERT INTO vehicles (vin, snapshot, connection_id, seq_window, last_sequence, last_seen_at, version)"
    " VALUES (?,?,?,?,?,?,?)"
    " ON CONFLICT(vin) DO UPDATE SET snapshot=excluded.snapshot, connection_id=excluded.connection_id,"
    " seq_window=excluded.seq_window, last_sequence=excluded.last_sequence,"
    " last_seen_at=excluded.last_seen_at, version=excluded.version"
    " WHERE vehicles.version = excluded.version - 1"
)
# Only the sequence moved since the stored snapshot (VehicleSession.snapshot_stale clear): the
# columns that override the snapshot's, under the same version rule. Same parameter order as
# _UPSERT without the snapshot and the connection id.
_NARROW = (
    "UPDATE vehicles SET seq_window=?2, last_sequence=?3, last_seen_at=?4, version=?5"
    " WHERE vin=?1 AND version = ?5 - 1"
)


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def _sequence_blob(s: VehicleSession) -> bytes:
    if not s.previous_last_sequence:
        return _u64(s.seen_window)
    return b"".join(
        _u64(v) for v in (s.seen_window, s.previous_epoch, s.previous_last_sequence, s.previous_seen_window)
    )


def _sequence_extra(blob: bytes) -> SequenceExtra:
    words = [int.from_bytes(blob[i : i + 8], "big") for i in range(0, len(blob) - 7, 8)]
    words += [0] * (4 - len(words))
    return SequenceExtra(*words[:4])


_SESSION_COLUMNS = "snapshot, connection_id, seq_window, last_sequence, last_seen_at"


def _session(
    snapshot: bytes,
    connection_id: bytes,
    window: bytes,
    last_sequence: bytes | None,
    last_seen_at: float | None,
) -> VehicleSession:
    """A session from the row's _SESSION_COLUMNS: the snapshot, with the sequence written
    after it (narrow updates) where there is one."""
    s = vehicle_from_proto(
        vehicles_pb2.Vehicle.FromString(snapshot),
        connection_id=int.from_bytes(connection_id, "big"),
        sequence=_sequence_extra(window),
    )
    if last_sequence is not None:
        s.last_sequence = int.from_bytes(last_sequence, "big")
    if last_seen_at is not None:
        s.last_seen_at = last_seen_at
    return s


class SqliteStore:
    def __init__(self, *, path: Path) -> None:
        """path: the database file; its directory is created when missing."""
        self.path = path
        self._db = SqliteThread(path=path, migrations="sqlite_store", name="sqlite-store")
        self.prune_chunk = PRUNE_CHUNK  # rows per prune step (tests make it small)
        self._versions = KnownVersions()

    @property
    def stale_snapshots(self) -> int:
        """Snapshots not written because the stored row was newer (another gateway's)."""
        return self._versions.stale

    @property
    def is_open(self) -> bool:
        return self._db.is_open

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._db.run(fn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    async def open(self) -> None:
        try:
            await self._db.open()
        except (sqlite3.Error, MigrationError) as exc:
            raise StoreError(f"cannot open sqlite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        await self._db.close()

    async def probe(self) -> None:
        try:
            await self._db.probe_write()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    async def load_sessions(self) -> list[VehicleSession]:
        def load(db: sqlite3.Connection) -> list[VehicleSession]:
            out = []
            versions = {}
            for vin, snap, conn_id, window, last_sequence, last_seen_at, version in db.execute(
                f"SELECT vin, {_SESSION_COLUMNS}, version FROM vehicles"
            ):
                versions[vin] = version
                out.append(_session(snap, conn_id, window, last_sequence, last_seen_at))
            self._versions.reset(versions)
            return out

        return await self._run(load)

    async def get_vehicle(self, vin: str) -> VehicleSession | None:
        def read(db: sqlite3.Connection) -> VehicleSession | None:
            row = db.execute(f"SELECT {_SESSION_COLUMNS} FROM vehicles WHERE vin = ?", (vin,)).fetchone()
            return None if row is None else _session(*row)

        return await self._run(read)

    async def list_vehicles(self, after: str, limit: int) -> list[VehicleSession]:
        def read(db: sqlite3.Connection) -> list[VehicleSession]:
            rows = db.execute(
                f"SELECT {_SESSION_COLUMNS} FROM vehicles WHERE vin > ? ORDER BY vin LIMIT ?", (after, limit)
            )
            return [_session(*row) for row in rows]

        return await self._run(read)

    async def commit_batch(
        self, vehicles: Sequence[VehicleSession], events: Sequence[PendingEvent]
    ) -> list[StoredEvent]:
        # Serialize on the event loop: sessions are mutated there and must be read there. A car
        # stored by this store whose session changed only in its sequence since the snapshot
        # was taken gets the narrow update (no snapshot serialized); the others the whole row.
        full: list[tuple[str, tuple[object, ...]]] = []  # (vin, the row without its version)
        narrow: list[tuple[str, tuple[object, ...]]] = []
        taken: list[VehicleSession] = []  # snapshots taken now: stale again unless committed
        known = self._versions.expected
        for s in vehicles:
            sequence = (_sequence_blob(s), _u64(s.last_sequence), s.last_seen_at)
            if s.snapshot_stale or known(s.vin) is None:
                s.snapshot_stale = False
                taken.append(s)
                snapshot = vehicle_to_proto(s).SerializeToString()
                full.append((s.vin, (s.vin, snapshot, _u64(s.connection_id), *sequence)))
            else:
                narrow.append((s.vin, (s.vin, *sequence)))

        versions: dict[str, int] = {}

        def commit(db: sqlite3.Connection) -> list[StoredEvent]:
            written: list[StoredEvent] = []
            expected = self._versions.expected
            # One executemany per statement (the hot path: a row per car of the batch).
            # total_changes counts the rows written (rowcount does not reset for an upsert that
            # wrote nothing); when one was refused, the batch's rows are written again row by
            # row to tell which.
            db.execute("SAVEPOINT snapshots")
            before = db.total_changes
            batches = [
                (sql, [(vin, (expected(vin) or 0) + 1, row) for vin, row in rows])
                for sql, rows in ((_UPSERT, full), (_NARROW, narrow))
                if rows
            ]
            for sql, params in batches:
                db.executemany(sql, [(*row, version) for _, version, row in params])
            if db.total_changes - before == len(full) + len(narrow):
                for _, params in batches:
                    versions.update((vin, version) for vin, version, _ in params)
            else:
                db.execute("ROLLBACK TO snapshots")
                for sql, params in batches:
                    for vin, version, row in params:
                        if db.execute(sql, (*row, version)).rowcount:
                            versions[vin] = version
                        else:
                            self._versions.stale += 1
                            log.warning("vehicle %s: snapshot not written, the stored one is newer", vin)
            db.execute("RELEASE snapshots")
            for e in events:
                if e.dedupe_key:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO event_dedupe (vin, key) VALUES (?, ?)",
                        (e.vin, e.dedupe_key),
                    )
                    if cur.rowcount == 0:
                        continue
                cur = db.execute(
                    "INSERT INTO vehicle_events (vin, kind, payload) VALUES (?, ?, ?)",
                    (e.vin, e.kind, e.payload),
                )
                assert cur.lastrowid is not None
                written.append(StoredEvent(cur.lastrowid, e.vin, e.payload, e.kind))
            return written

        try:
            stored = await self._db.transaction(commit, lambda: self._versions.written(versions))
        except BaseException as exc:
            for s in taken:  # not stored: the next commit writes the whole row again
                s.snapshot_stale = True
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"sqlite {self.path}: {exc}") from exc
            raise
        for s in vehicles:
            if s.vin not in versions:  # refused (the stored row is newer): whole next time
                s.snapshot_stale = True
        return stored

    async def read_events(self, after: int, limit: int, vin: str = "") -> list[StoredEvent]:
        after = cursor_arg(after)  # a uint64 from the client; SQLite compares signed 64-bit

        def read(db: sqlite3.Connection) -> list[StoredEvent]:
            if vin:
                cur = db.execute(
                    "SELECT cursor, vin, payload FROM vehicle_events WHERE vin = ? AND cursor > ?"
                    " ORDER BY cursor LIMIT ?",
                    (vin, after, limit),
                )
            else:
                cur = db.execute(
                    "SELECT cursor, vin, payload FROM vehicle_events WHERE cursor > ?"
                    " ORDER BY cursor LIMIT ?",
                    (after, limit),
                )
            return [StoredEvent(c, v, p) for c, v, p in cur]

        return await self._run(read)

    async def first_cursor(self) -> int:
        return await self._run(lambda db: first_cursor(db, "vehicle_events"))

    async def prune_events(self, keep: int) -> int:
        return await prune_keeping(self._run, "vehicle_events", keep, self.prune_chunk)
