"""Which databases the gateway uses, from its configuration: the one place that chooses.

Empty store_url: the embedded SQLite files in data_dir (`gateway.db` for the vehicle store,
`entitlements.db` for the ledger and the R7 security codes). A postgresql:// URL: that one
database for all three. Either way the schema is migrated when each is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config
from gateway.entitlements.ledger import Ledger
from gateway.entitlements.ledger.postgres import PostgresLedger
from gateway.entitlements.ledger.sqlite import SqliteLedger
from gateway.metrics import Metrics
from gateway.security.code_records import CodeRecords
from gateway.security.code_records_postgres import PostgresCodeRecords
from gateway.security.code_records_sqlite import SqliteCodeRecords
from gateway.store.base import SharedStore, Store
from gateway.store.pg import PoolSettings
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore


@dataclass(frozen=True, slots=True)
class Backends:
    store: Store
    ledger: Ledger
    # The R7 code records live in the ledger's database: usable once the ledger is open.
    code_records: CodeRecords
    display: str  # where the data is, without a password (for log lines)
    # `store` when several gateways may write it (PostgreSQL); None: one gateway's own (SQLite).
    shared_store: SharedStore | None = None


def pool_settings(config: Config, metrics: Metrics | None, database: str) -> PoolSettings:
    """The PostgreSQL pool of `database` (store, ledger, leases) as `config` sets it; its
    statements cut off by the time limit are counted in `metrics`."""
    on_timeout = metrics.store_statement_timeouts.labels(database).inc if metrics is not None else None
    return PoolSettings(
        max_size=config.store_pool_size,
        command_timeout_s=config.store_command_timeout_s,
        on_timeout=on_timeout,
    )


def build_backends(config: Config, metrics: Metrics | None = None) -> Backends:
    """The (unopened) store, ledger and code records for `config`."""
    if config.store_url:
        pg_ledger = PostgresLedger(url=config.store_url, settings=pool_settings(config, metrics, "ledger"))
        pg_store = PostgresStore(url=config.store_url, settings=pool_settings(config, metrics, "store"))
        return Backends(
            store=pg_store,
            shared_store=pg_store,
            ledger=pg_ledger,
            code_records=PostgresCodeRecords(pg_ledger.database),
            display=pg_ledger.display,
        )
    data_dir = Path(config.data_dir)
    sqlite_ledger = SqliteLedger(path=data_dir / "entitlements.db")
    return Backends(
        store=SqliteStore(path=data_dir / "gateway.db"),
        ledger=sqlite_ledger,
        code_records=SqliteCodeRecords(sqlite_ledger.thread),
        display=f"sqlite files in {data_dir}",
    )
