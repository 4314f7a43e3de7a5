"""The ledger seam: durable entitlements, their outbox, owners, entitlement sets and FoD commands.

`base` holds the `Ledger` protocol, its records and errors (re-exported here); `sqlite`
(SqliteLedger, the embedded deployment, with its row mapping in `sqlite_rows`) and `postgres`
(PostgresLedger, store_url) implement it. gateway/store/backends.py chooses one. They are not
imported here, so code that only names the protocol or `LedgerError` loads no database driver.
"""

from gateway.entitlements.ledger.base import (
    CommandRecord,
    DuplicateOrder,
    Ledger,
    LedgerError,
    OutboxEvent,
    SetConflict,
    SetMark,
    SetRecord,
    VehicleSets,
    VersionConflict,
)

__all__ = [
    "CommandRecord",
    "DuplicateOrder",
    "Ledger",
    "LedgerError",
    "OutboxEvent",
    "SetConflict",
    "SetMark",
    "SetRecord",
    "VehicleSets",
    "VersionConflict",
]
