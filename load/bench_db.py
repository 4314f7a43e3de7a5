"""The PostgreSQL server of the benchmarks: where it is, and a fresh database per run.

Where: GATEWAY_BENCH_PG_DSN (a URL of any database on the server, used to create and drop the
run's database), else the local server as `postgres`. Used by the gateway-pg systems
(load/fleet_sink.py) and the store cost (load/store_cost.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gateway.redact import redact_url

PG_ENV = "GATEWAY_BENCH_PG_DSN"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


class PostgresUnavailable(RuntimeError):
    """The benchmark's PostgreSQL server cannot be used (the message names it without password)."""


def admin_url() -> str:
    return os.environ.get(PG_ENV) or DEFAULT_PG


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _admin(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    try:
        return asyncio.run(_fetch(url, sql, *args))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise PostgresUnavailable(
            f"PostgreSQL at {redact_url(url)} not usable for the benchmark: "
            f"{type(exc).__name__}: {exc} (set {PG_ENV}, or leave the PostgreSQL parts out)"
        ) from None


def check_server(url: str) -> None:
    """Fail early, before any run, when the server is unreachable."""
    _admin(url, "SELECT 1")


class BenchDatabase:
    """A fresh database for one run: created by ``create``, dropped by ``drop``."""

    def __init__(self, admin: str) -> None:
        self.admin = admin
        self.name = f"gwbench_{secrets.token_hex(6)}"
        self.url = with_database(admin, self.name)
        self.created = False

    def create(self) -> None:
        _admin(self.admin, f"CREATE DATABASE {self.name}")
        self.created = True

    def drop(self) -> None:
        if self.created:
            _admin(self.admin, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            self.created = False

    def backend_pids(self) -> list[int]:
        rows = _admin(self.admin, "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.name)
        return [int(r["pid"]) for r in rows]
