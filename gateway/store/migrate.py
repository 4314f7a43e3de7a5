"""Versioned schema migrations: numbered SQL files applied in order, recorded in the database.

Each database kind has a folder of files in gateway/store/migrations/ named `NNNN_what.sql`
(`sqlite_store`: gateway.db, `sqlite_ledger`: entitlements.db, `postgres`: the one PostgreSQL
database). A database records the versions applied to it in `schema_migrations`; at open, the
missing ones are applied in order, each with its record in the same transaction, so a failed
migration leaves the database as it was. A database with a version this code does not know was
migrated by a newer gateway: it is refused (SchemaTooNew) rather than written with an older
idea of its tables.

Adoption: the SQLite files made before migrations existed have today's tables but no
`schema_migrations`. Their 0001 files are that schema with `IF NOT EXISTS`, so applying 0001 to
such a file keeps every row and records version 1; later files alter it like any other.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# PostgreSQL: gateways starting together take turns (the lock ends with the transaction).
_PG_MIGRATION_LOCK = 0x6777_6D69_6772  # "gwmigr"


class MigrationError(Exception):
    """The schema cannot be brought to this code's version."""


class SchemaTooNew(MigrationError):
    """The database was migrated by a newer gateway."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(kind: str) -> list[Migration]:
    """The migrations of one database kind (a folder of gateway/store/migrations), in order."""
    folder = resources.files("gateway.store") / "migrations" / kind
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if not found or [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations/{kind}: expected files numbered 0001, 0002, ... without gaps")
    return found


def pending(known: list[Migration], applied: set[int], where: str) -> list[Migration]:
    """The migrations still to apply; SchemaTooNew when the database has one we do not know."""
    newest = known[-1].version
    unknown = sorted(v for v in applied if v > newest)
    if unknown:
        raise SchemaTooNew(
            f"{where}: the database schema is at version {unknown[-1]}, newer than this gateway's"
            f" {newest}; it was migrated by a newer gateway (run that version, or restore a backup)"
        )
    return [m for m in known if m.version not in applied]


_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at {now_type} NOT NULL)"
)


def migrate_sqlite(db: sqlite3.Connection, kind: str, where: str) -> list[int]:
    """Bring an open SQLite connection (autocommit mode) to the newest version of `kind`;
    the versions applied. `where` names the database in errors."""
    known = migrations(kind)
    db.execute(_CREATE_TABLE.format(now_type="REAL"))
    applied = {int(v) for (v,) in db.execute("SELECT version FROM schema_migrations")}
    done = []
    for m in pending(known, applied, where):
        # executescript commits a pending transaction before it runs, so BEGIN and COMMIT are
        # part of the script: the migration and its record commit together or not at all.
        try:
            db.executescript(
                f"BEGIN IMMEDIATE;\n{m.sql}\n;"
                f"INSERT INTO schema_migrations (version, name, applied_at)"
                f" VALUES ({m.version}, '{m.name}', (julianday('now') - 2440587.5) * 86400.0);\nCOMMIT;"
            )
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise MigrationError(f"{where}: migration {m.name} failed: {exc}") from exc
        done.append(m.version)
    return done


async def migrate_postgres(
    conn: asyncpg.Connection | PoolConnectionProxy, kind: str = "postgres", where: str = ""
) -> list[int]:
    """Bring the database of `conn` to the newest version of `kind`; the versions applied.
    All pending migrations run in one transaction, under an advisory lock: of gateways that
    start together, one migrates and the others then find nothing left to do."""
    known = migrations(kind)
    done: list[int] = []
    current = "schema_migrations"
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
            await conn.execute(_CREATE_TABLE.format(now_type="timestamptz"))
            applied = {int(r["version"]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for m in pending(known, applied, where):
                current = m.name
                await conn.execute(m.sql)  # no arguments: several statements in one round trip
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())",
                    m.version,
                    m.name,
                )
                done.append(m.version)
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"{where}: migration {current} failed: {exc}") from exc
    return done
