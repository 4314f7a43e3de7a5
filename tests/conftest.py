"""Shared fixtures. Integration tests start their own Mosquitto with the project's config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from ejabberd_support import Ejabberd
from ejabberd_support import Unavailable as EjabberdUnavailable
from pg_support import TestDatabase, Unreachable, clean_tables, create_test_database, drop_test_database
from support import free_port

from gateway.broker.managed import ManagedBroker
from gateway.config import Config
from gateway.store.backends import Backends, build_backends
from gateway.store.base import Store


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ManagedBroker]:
    """A Mosquitto on a free port with the project's configuration and ACL."""
    b = ManagedBroker(directory=tmp_path / "broker", port=free_port())
    b.start_sync()
    try:
        yield b
    finally:
        b.stop_sync()


@pytest.fixture(scope="session")
def ejabberd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ejabberd]:
    """One private ejabberd (mod_mqtt) for the session: its Erlang VM takes seconds to start.
    Tests share it, each with its own MQTT client ids. Not installed: the test skips, saying so."""
    try:
        node = Ejabberd(directory=tmp_path_factory.mktemp("ejabberd"))
    except EjabberdUnavailable as exc:
        pytest.skip(str(exc))
    node.start_sync()
    try:
        yield node
    finally:
        node.stop_sync()


@pytest.fixture
async def anyio_backend() -> AsyncIterator[str]:  # pragma: no cover - not used, keeps plugins quiet
    yield "asyncio"


# -- the database backends: SQLite files in tmp_path, or a real PostgreSQL (tests/pg_support.py)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[TestDatabase | str]:
    """The session's PostgreSQL test database, or why there is none (the tests then skip)."""
    try:
        db = create_test_database()
    except Unreachable as exc:
        yield str(exc)
        return
    try:
        yield db
    finally:
        drop_test_database(db)


@pytest.fixture
def pg_url(pg_database: TestDatabase | str) -> str:
    """A URL of the session's PostgreSQL test database with every table empty."""
    if isinstance(pg_database, str):
        pytest.skip(pg_database)
    clean_tables(pg_database.url)
    return pg_database.url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test once per database kind."""
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str:
    """Empty for SQLite (files in the test's tmp_path), else the clean PostgreSQL database."""
    if backend == "sqlite":
        return ""
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def make_store(store_url: str, tmp_path: Path) -> Callable[[], Store]:
    """A new (unopened) vehicle store on the test's database; each call: the same data."""
    return lambda: build_backends(Config(data_dir=str(tmp_path), store_url=store_url)).store


@pytest.fixture
def make_backends(store_url: str, tmp_path: Path) -> Callable[[], Backends]:
    """New (unopened) store, ledger and code records on the test's database."""
    return lambda: build_backends(Config(data_dir=str(tmp_path), store_url=store_url))
