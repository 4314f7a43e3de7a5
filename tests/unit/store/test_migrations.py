"""Versioned schema migrations (gateway/store/migrate.py): applied in order and once, a failed one
leaves nothing of itself, a database newer than the code is refused, and SQLite files made
before migrations existed are adopted with their data."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import old_sqlite_schema
import pytest

from gateway.store import migrate
from gateway.store.base import PendingEvent, StoreError
from gateway.store.migrate import Migration, MigrationError, SchemaTooNew, migrate_postgres, migrate_sqlite
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

VIN = "WP0ZZZ99ZTS392124"


def _newest(kind: str) -> int:
    return migrate.migrations(kind)[-1].version


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [v for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY version")]


@pytest.fixture
async def pg_schema(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to an empty schema of its own in the test database (a fresh database)."""
    name = f"m_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE SCHEMA {name}")
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": name})
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP SCHEMA {name} CASCADE")
        await admin.close()


# -- adoption of the files made before migrations ------------------------------------------------


async def test_a_vehicle_store_file_made_before_migrations_opens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with sqlite3.connect(path) as db:
        db.executescript(old_sqlite_schema.STORE)
        # What the old SqliteStore wrote: an empty snapshot is a valid telematics.v1.Vehicle.
        db.execute(
            "INSERT INTO vehicles (vin, snapshot, connection_id, seq_window) VALUES (?, ?, ?, ?)",
            (VIN, b"\n\x11" + VIN.encode(), (2**64 - 1).to_bytes(8, "big"), (5).to_bytes(8, "big")),
        )
        db.execute("INSERT INTO vehicle_events (vin, kind, payload) VALUES (?, 'online', x'01')", (VIN,))
    db.close()
    store = SqliteStore(path=path)
    await store.open()
    [session] = await store.load_sessions()
    assert (session.vin, session.connection_id, session.seen_window) == (VIN, 2**64 - 1, 5)
    assert [(e.cursor, e.payload) for e in await store.read_events(0, 10)] == [(1, b"\x01")]
    written = await store.commit_batch([session], [PendingEvent(VIN, "offline", b"\x02")])
    assert [e.cursor for e in written] == [2]  # the old file's cursors go on
    await store.close()
    assert _versions(path) == list(range(1, _newest("sqlite_store") + 1))


# -- order, once, all or nothing, never backwards ------------------------------------------------


async def test_sqlite_migrations_apply_in_order_and_once(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    assert migrate_sqlite(db, "sqlite_ledger", "x.db") == list(range(1, _newest("sqlite_ledger") + 1))
    assert migrate_sqlite(db, "sqlite_ledger", "x.db") == []
    db.close()


async def test_postgres_migrations_apply_in_order_and_once(pg_schema: asyncpg.Connection) -> None:
    assert await migrate_postgres(pg_schema) == list(range(1, _newest("postgres") + 1))
    assert await migrate_postgres(pg_schema) == []


async def test_gateways_starting_together_on_a_fresh_postgres_migrate_it_once(
    pg_url: str, pg_schema: asyncpg.Connection
) -> None:
    search_path = await pg_schema.fetchval("SHOW search_path")
    others = [await asyncpg.connect(pg_url, server_settings={"search_path": search_path}) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate_postgres(c) for c in [pg_schema, *others]))
    finally:
        for c in others:
            await c.close()
    assert sorted(results, key=len) == [[], [], list(range(1, _newest("postgres") + 1))]


def _with_broken_second(monkeypatch: pytest.MonkeyPatch, first: str) -> None:
    broken = [
        Migration(1, "0001_a.sql", first),
        Migration(2, "0002_b.sql", "CREATE TABLE b (x integer); CREATE TABLE b (x integer);"),
    ]
    monkeypatch.setattr(migrate, "migrations", lambda kind: broken)


async def test_a_failed_sqlite_migration_leaves_nothing_of_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_broken_second(monkeypatch, "CREATE TABLE a (x integer);")
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    with pytest.raises(MigrationError, match=r"0002_b\.sql"):
        migrate_sqlite(db, "any", "x.db")
    tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "b" not in tables and "a" in tables  # each file is its own transaction
    assert [v for (v,) in db.execute("SELECT version FROM schema_migrations")] == [1]
    assert not db.in_transaction
    db.close()


async def test_a_failed_postgres_migration_leaves_nothing_at_all(
    pg_schema: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_broken_second(monkeypatch, "CREATE TABLE a (x integer);")
    with pytest.raises(MigrationError, match=r"0002_b\.sql"):
        await migrate_postgres(pg_schema)
    tables = {r["tablename"] for r in await pg_schema.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )}
    assert tables == set()  # one transaction: not even schema_migrations


async def test_a_sqlite_file_migrated_by_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = SqliteStore(path=path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', 0)")
    db.close()
    with pytest.raises(StoreError, match="schema is at version 9999, newer than this gateway"):
        await SqliteStore(path=path).open()


async def test_a_postgres_database_migrated_by_a_newer_gateway_is_refused(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', now())")
        store = PostgresStore(url=pg_url)
        with pytest.raises(StoreError, match="schema is at version 9999, newer than this gateway"):
            await store.open()
        assert not store.is_open
    finally:
        await conn.execute("DELETE FROM schema_migrations WHERE version = 9999")
        await conn.close()


def test_schema_too_new_is_a_migration_error() -> None:
    assert issubclass(SchemaTooNew, MigrationError)
