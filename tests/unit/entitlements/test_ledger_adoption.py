"""The ledger's SQLite file made before versioned migrations (tests/old_sqlite_schema.py) opens
with its entitlements, owners and security codes after an upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import old_sqlite_schema
from engine_harness import OWNER, VIN, at, order

from gateway.entitlements import EntitlementKind, grant
from gateway.entitlements.ledger.sqlite import SqliteLedger
from gateway.entitlements.ledger.sqlite_rows import entitlement_to_json
from gateway.store import migrate

NOW = at(2026, 3, 1, 10)


async def test_a_ledger_file_made_before_migrations_opens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "entitlements.db"
    e, _events = grant(order(EntitlementKind.FIXED_TERM, term_months=12), NOW, is_owner=True)
    with sqlite3.connect(path) as db:
        db.executescript(old_sqlite_schema.LEDGER)
        db.execute(
            "INSERT INTO entitlements (entitlement_id, order_id, vin, state, updated_at, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (e.entitlement_id, e.order_id, e.vin, e.state.value, e.updated_at, entitlement_to_json(e)),
        )
        db.execute("INSERT INTO vehicle_owners (vin, account) VALUES (?, ?)", (VIN, OWNER))
        db.execute(
            "INSERT INTO security_codes (account, code_hash, failures, locked_until, updated_at)"
            " VALUES (?, 'scrypt$x', 3, 0, 1)",
            (OWNER,),
        )
    db.close()
    ledger = SqliteLedger(path=path)
    await ledger.open()
    assert await ledger.get(e.entitlement_id) == e
    assert await ledger.get_owner(VIN) == OWNER
    await ledger.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT failures FROM security_codes").fetchall() == [(3,)]
    db.close()
    with sqlite3.connect(path) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    db.close()
    assert versions == [m.version for m in migrate.migrations("sqlite_ledger")]
