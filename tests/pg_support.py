"""A real PostgreSQL for the tests: a fresh database per test session, clean tables per test.

Where the server is: GATEWAY_TEST_PG_DSN (a URL of any database on it, used to create and drop
the test database), else the local server on 127.0.0.1:5432 as `postgres` or as the current
user, else its Unix socket as the current user (what scripts/bootstrap.sh sets up on a fresh
machine). None reachable: the PostgreSQL tests are skipped with what was tried and why.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.redact import redact_url
from gateway.store.migrate import migrate_postgres

ENV = "GATEWAY_TEST_PG_DSN"
SOCKET_DIR = "/var/run/postgresql"


def candidates() -> list[str]:
    if os.environ.get(ENV):
        return [os.environ[ENV]]
    user = getpass.getuser()
    found = ["postgresql://postgres@127.0.0.1:5432/postgres", f"postgresql://{user}@127.0.0.1:5432/postgres"]
    return [*dict.fromkeys(found), f"postgresql://{user}@/postgres?host={SOCKET_DIR}"]


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass(frozen=True, slots=True)
class TestDatabase:
    admin_url: str  # the server's maintenance database: creates and drops the test one
    url: str        # the test database, migrated

    __test__ = False  # not a test class for pytest


async def _reach() -> str:
    tried = []
    for url in candidates():
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            tried.append(f"{redact_url(url)}: {type(exc).__name__}: {exc}")
            continue
        await conn.close()
        return url
    raise Unreachable("no PostgreSQL server reached (set GATEWAY_TEST_PG_DSN); tried " + "; ".join(tried))


class Unreachable(Exception):
    pass


async def _create() -> TestDatabase:
    admin = await _reach()
    name = f"gwtest_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    db = TestDatabase(admin, with_database(admin, name))
    conn = await asyncpg.connect(db.url)
    try:
        await migrate_postgres(conn, "postgres", "test database")
    finally:
        await conn.close()
    return db


async def _drop(db: TestDatabase) -> None:
    name = urlsplit(db.url).path.strip("/")
    conn = await asyncpg.connect(db.admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


def create_test_database() -> TestDatabase:
    """A fresh, migrated database (Unreachable when no server answers)."""
    return asyncio.run(_create())


def drop_test_database(db: TestDatabase) -> None:
    asyncio.run(_drop(db))


def clean_tables(url: str) -> None:
    """Every table empty and every identity back at 1, the schema as migrated (from a synchronous
    fixture: no event loop runs there)."""
    asyncio.run(_clean_tables(url))


async def _clean_tables(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename != 'schema_migrations'"
            )
        ]
        await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
