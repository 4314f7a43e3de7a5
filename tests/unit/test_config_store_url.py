"""store_url: empty keeps the embedded SQLite files; a postgresql:// URL selects PostgreSQL; a bad
one is a one-line config error that never shows the password (file, environment or flag)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import free_port

from gateway.config import Config, ConfigError, load_config
from gateway.entitlements.ledger.postgres import PostgresLedger
from gateway.entitlements.ledger.sqlite import SqliteLedger
from gateway.store.backends import build_backends
from gateway.store.base import StoreError
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

SECRET = "s3cret"


def test_by_default_the_store_is_the_sqlite_files_in_data_dir(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path))
    assert config.store_url == ""
    backends = build_backends(config)
    assert isinstance(backends.store, SqliteStore) and backends.store.path == tmp_path / "gateway.db"
    assert isinstance(backends.ledger, SqliteLedger) and backends.ledger.path == tmp_path / "entitlements.db"


@pytest.mark.parametrize("source", ["env", "file", "flag"])
def test_a_postgresql_url_selects_postgresql_and_is_shown_without_its_password(
    tmp_path: Path, source: str
) -> None:
    url = f"postgresql://gw:{SECRET}@db.example:5432/gateway"
    if source == "env":
        config = load_config(env={"GATEWAY_STORE_URL": url})
    elif source == "file":
        f = tmp_path / "g.toml"
        f.write_text(f'store_url = "{url}"\n')
        config = load_config(str(f), env={})
    else:
        config = load_config(env={}, store_url=url)
    assert config.store_url == url
    backends = build_backends(config)
    assert isinstance(backends.store, PostgresStore) and isinstance(backends.ledger, PostgresLedger)
    for shown in (backends.display, config.store_display, repr(config), backends.store.display):
        assert SECRET not in shown
    assert backends.display == "postgresql://gw:***@db.example:5432/gateway"


def test_a_unix_socket_url_is_accepted() -> None:
    url = "postgresql://gw@/gateway?host=/var/run/postgresql"
    assert load_config(env={}, store_url=url).store_url == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"mysql://gw:{SECRET}@db.example/gateway", "scheme must be postgresql://"),
        (f"postgresql://gw:{SECRET}@db.example:99999/gateway", "bad host, port or query"),
        (f"postgresql://gw:{SECRET}@db.example:0/gateway", "bad port"),
        (f"postgresql://gw:{SECRET}@db.example:5432", "no database name"),
        (f"postgresql://gw:{SECRET}@:5432/gateway", "no host"),
        (
            f"postgresql://gw:{SECRET}@db.example/gateway?sslmode=require&password={SECRET}",
            "unsupported parameter password",
        ),
        (f"postgresql://gw:{SECRET}@db.example/gateway#frag", "unexpected fragment"),
    ],
)
def test_a_bad_store_url_is_a_config_error_naming_the_problem_and_withholding_the_password(
    url: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"GATEWAY_STORE_URL": url})
    message = str(caught.value)
    assert message.startswith("GATEWAY_STORE_URL: ") and reason in message
    assert SECRET not in message and SECRET not in repr(caught.value.__cause__)
    assert "\n" not in message


def test_the_config_repr_never_holds_the_store_password() -> None:
    config = Config(store_url=f"postgresql://gw:{SECRET}@db.example/gateway")
    assert SECRET not in repr(config) and SECRET not in str(config)


async def test_an_unreachable_postgresql_fails_the_open_with_a_redacted_message(tmp_path: Path) -> None:
    url = f"postgresql://gw:{SECRET}@127.0.0.1:{free_port()}/gateway"
    store = build_backends(Config(data_dir=str(tmp_path), store_url=url)).store
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert "cannot open postgresql database postgresql://gw:***@127.0.0.1" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_statement_time_limit_and_pool_size_are_validated() -> None:
    with pytest.raises(ConfigError, match="store_command_timeout_s"):
        load_config(None, env={}, store_command_timeout_s=0)
    with pytest.raises(ConfigError, match="store_pool_size"):
        load_config(None, env={}, store_pool_size=0)
    config = load_config(None, env={"GATEWAY_STORE_COMMAND_TIMEOUT_S": "2.5", "GATEWAY_STORE_POOL_SIZE": "3"})
    assert (config.store_command_timeout_s, config.store_pool_size) == (2.5, 3)
