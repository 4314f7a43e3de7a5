"""Narrow row updates (issue 12): while only a car's sequence moved since the store took its
whole snapshot (VehicleSession.snapshot_stale clear), the store writes the sequence columns
alone; reads and a restart still see the newest sequence. On SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from gateway._gen.telematics.v1 import vehicles_pb2
from gateway.model import Bearer, Presence, VehicleSession
from gateway.store.base import Store, StoreConflict, StoreError
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

VIN = "WP0ZZZ99ZTS392124"
OTHER = "WP0ZZZ99ZTS392125"
MakeStore = Callable[[], Store]


async def stored_snapshot(store: Store, store_url: str, vin: str) -> vehicles_pb2.Vehicle:
    """The snapshot column of the car's row as the database holds it (what the store last took
    whole), read around the store."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as db:
            (blob,) = db.execute("SELECT snapshot FROM vehicles WHERE vin = ?", (vin,)).fetchone()
    else:
        conn = await asyncpg.connect(store_url)
        try:
            blob = await conn.fetchval("SELECT snapshot FROM vehicles WHERE vin = $1", vin)
        finally:
            await conn.close()
    return vehicles_pb2.Vehicle.FromString(blob)


def online(vin: str, seq: int) -> VehicleSession:
    return VehicleSession(vin=vin, bearer=Bearer.EMBEDDED_SIM, presence=Presence.ONLINE,
                          last_sequence=seq, seen_window=1, last_seen_at=1_764_000_000.25)


async def test_a_sequence_only_change_writes_the_sequence_alone_and_reads_back_whole(
    make_store: MakeStore, store_url: str
) -> None:
    store = make_store()
    await store.open()
    await store.load_sessions()
    s = online(VIN, 1)
    await store.commit_batch([s], [])
    assert not s.snapshot_stale  # the store took the whole snapshot
    s.last_sequence, s.seen_window, s.last_seen_at = 2, 0b11, 1_764_000_001.5  # what the tracker moves
    await store.commit_batch([s], [])
    # The snapshot column is the one of the first write; the sequence went to its own columns.
    assert (await stored_snapshot(store, store_url, VIN)).last_sequence == 1
    read = await store.get_vehicle(VIN)
    assert read is not None
    assert (read.last_sequence, read.seen_window, read.last_seen_at) == (2, 0b11, 1_764_000_001.5)
    await store.close()
    reopened = make_store()
    await reopened.open()
    [loaded] = await reopened.load_sessions()  # a restart (crash recovery) restores the newest
    await reopened.close()
    assert (loaded.last_sequence, loaded.seen_window, loaded.last_seen_at) == (2, 0b11, 1_764_000_001.5)
    assert (loaded.presence, loaded.bearer) == (Presence.ONLINE, Bearer.EMBEDDED_SIM)


async def test_a_change_beyond_the_sequence_writes_the_whole_snapshot_again(
    make_store: MakeStore, store_url: str
) -> None:
    store = make_store()
    await store.open()
    await store.load_sessions()
    moved, changed = online(VIN, 1), online(OTHER, 1)
    await store.commit_batch([moved, changed], [])
    moved.last_sequence = 2
    changed.last_sequence, changed.presence = 2, Presence.OFFLINE
    changed.snapshot_stale = True  # as the tracker marks a presence change
    await store.commit_batch([moved, changed], [])  # one batch, both kinds of row
    assert (await stored_snapshot(store, store_url, VIN)).last_sequence == 1
    whole = await stored_snapshot(store, store_url, OTHER)
    assert whole.last_sequence == 2 and whole.presence == Presence.OFFLINE.value
    # A later narrow write over the new snapshot: the columns still win over it.
    changed.last_sequence = 3
    await store.commit_batch([changed], [])
    await store.close()
    reopened = make_store()
    await reopened.open()
    loaded = {s.vin: s for s in await reopened.load_sessions()}
    await reopened.close()
    assert (loaded[VIN].last_sequence, loaded[OTHER].last_sequence) == (2, 3)
    assert loaded[OTHER].presence is Presence.OFFLINE


async def test_a_failed_commit_leaves_the_snapshot_to_be_written_whole(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    await store.load_sessions()
    s = online(VIN, 1)
    await store.close()
    with pytest.raises(StoreError):
        await store.commit_batch([s], [])
    assert s.snapshot_stale  # not stored: the next commit must not write the sequence alone


async def test_a_narrow_write_over_a_row_another_gateway_wrote_is_refused(pg_url: str) -> None:
    a, b = PostgresStore(url=pg_url), PostgresStore(url=pg_url)
    await a.open()
    await b.open()
    try:
        await a.load_sessions()
        mine = online(VIN, 1)
        await a.commit_batch([mine], [])
        [theirs] = await b.load_sessions()
        theirs.last_sequence = 2
        await b.commit_batch([theirs], [])  # b's first write of the car: whole
        mine.last_sequence = 3  # a's view is old: its narrow update must not land (version)
        assert not mine.snapshot_stale
        with pytest.raises(StoreConflict) as refused:
            await a.commit_batch([mine], [])
        assert refused.value.vins == (VIN,)
        stored = await b.get_vehicle(VIN)
        assert stored is not None and stored.last_sequence == 2
    finally:
        await a.close()
        await b.close()


async def test_a_refused_narrow_write_on_sqlite_makes_the_next_write_whole(tmp_path: Path) -> None:
    a, b = SqliteStore(path=tmp_path / "gateway.db"), SqliteStore(path=tmp_path / "gateway.db")
    await a.open()
    await b.open()
    try:
        await a.load_sessions()
        mine = online(VIN, 1)
        await a.commit_batch([mine], [])
        [theirs] = await b.load_sessions()
        theirs.last_sequence = 2
        await b.commit_batch([theirs], [])
        mine.last_sequence = 3
        await a.commit_batch([mine], [])  # narrow, over a row that moved on: skipped (SQLite)
        assert a.stale_snapshots == 1
        assert mine.snapshot_stale  # not left narrow forever: the next write is whole
    finally:
        await a.close()
        await b.close()
