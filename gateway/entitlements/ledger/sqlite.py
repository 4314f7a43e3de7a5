"""SQLite ledger (WAL) for the embedded deployment: its own file, `entitlements.db`.

One dedicated thread owns the connection (gateway/store/sqlite_thread.py, shared with the
vehicle store); WAL with synchronous=NORMAL survives a crash of the gateway process.
Entitlements are kept whole as JSON (the order included), with the columns the queries need
beside it; `order_id` is UNIQUE, the backstop behind idempotent grants. Each update names the
version it replaces (gateway/store/versions.py); the versions are kept on the database thread.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.entitlements.domain.types import Entitlement, LifecycleEvent
from gateway.entitlements.ledger.base import (
    CommandRecord,
    DuplicateOrder,
    LedgerError,
    OutboxEvent,
    SetMark,
    SetRecord,
    VehicleSets,
)
from gateway.entitlements.ledger.sqlite_rows import (
    COMMAND_COLUMNS,
    REVOKED,
    command_from_row,
    entitlement_from_json,
    put_command,
    put_set,
    write_entitlements,
)
from gateway.store.migrate import MigrationError
from gateway.store.sqlite_thread import SqliteThread, cursor_arg, first_cursor, prune_keeping
from gateway.store.versions import KnownVersions

T = TypeVar("T")

class SqliteLedger:
    def __init__(self, *, path: Path) -> None:
        """path: the database file (`<data_dir>/entitlements.db`); its directory is created."""
        self.path = path
        self._db = SqliteThread(path=path, migrations="sqlite_ledger", name="sqlite-ledger")
        self._versions = KnownVersions()

    @property
    def is_open(self) -> bool:
        return self._db.is_open

    @property
    def thread(self) -> SqliteThread:
        """The database thread, shared with the R7 security codes (gateway/security/code_store.py),
        which live beside the accounts."""
        return self._db

    async def _run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        transaction: bool = False,
        after_commit: Callable[[], None] | None = None,
    ) -> T:
        try:
            return await (self._db.transaction(fn, after_commit) if transaction else self._db.run(fn))
        except sqlite3.IntegrityError as exc:  # the only constraints: entitlement id, order id
            raise DuplicateOrder(f"sqlite {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise LedgerError(f"sqlite {self.path}: {exc}") from exc

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(fn, transaction=True)

    async def _write(
        self, fn: Callable[[sqlite3.Connection, KnownVersions, dict[str, int]], T]
    ) -> T:
        """A transaction that writes entitlements: the versions it wrote are remembered once
        it committed."""
        written: dict[str, int] = {}
        return await self._run(
            lambda db: fn(db, self._versions, written),
            transaction=True,
            after_commit=lambda: self._versions.written(written),
        )

    def _seen(self, rows: Iterable[tuple[str, str, int]]) -> builtins.list[Entitlement]:
        """Entitlements read as (entitlement_id, data, version) rows (on the database thread)."""
        out = []
        for eid, data, version in rows:
            self._versions.seen(eid, version)
            out.append(entitlement_from_json(data))
        return out

    async def open(self) -> None:
        try:
            await self._db.open()
        except (sqlite3.Error, MigrationError) as exc:
            raise LedgerError(f"cannot open sqlite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        await self._db.close()

    async def probe(self) -> None:
        try:
            await self._db.probe_write()
        except sqlite3.Error as exc:
            raise LedgerError(f"sqlite {self.path}: {exc}") from exc

    # -- entitlements and the outbox ------------------------------------------------------------

    async def load_live(self) -> list[Entitlement]:
        def load(db: sqlite3.Connection) -> list[Entitlement]:
            rows = db.execute(
                "SELECT entitlement_id, data, version FROM entitlements WHERE state != ?", (REVOKED,)
            ).fetchall()
            self._versions.reset({eid: version for eid, _data, version in rows})
            return [entitlement_from_json(data) for _eid, data, _version in rows]

        return await self._run(load)

    async def create(self, entitlement: Entitlement, events: Sequence[LifecycleEvent]) -> list[OutboxEvent]:
        return await self._write(
            lambda db, versions, written: write_entitlements(
                db, [entitlement], events, insert=True, versions=versions, written=written
            )
        )

    async def save(
        self,
        entitlements: Sequence[Entitlement],
        events: Sequence[LifecycleEvent],
        *,
        commands: Sequence[CommandRecord] = (),
        sets: Sequence[SetRecord] = (),
        published: Sequence[SetMark] = (),
        acked: Sequence[SetMark] = (),
    ) -> list[OutboxEvent]:
        def save(db: sqlite3.Connection, known: KnownVersions, now_at: dict[str, int]) -> list[OutboxEvent]:
            written = write_entitlements(
                db, entitlements, events, insert=False, versions=known, written=now_at
            )
            for c in commands:
                put_command(db, c)
            for s in sets:
                put_set(db, s)
            for m in published:
                db.execute(
                    "UPDATE entitlement_sets SET published_at = COALESCE(published_at, ?)"
                    " WHERE vin = ? AND version = ?",
                    (m.at, m.vin, m.version),
                )
            for m in acked:
                db.execute(
                    "UPDATE entitlement_sets SET acked_at = COALESCE(acked_at, ?)"
                    " WHERE vin = ? AND version = ?",
                    (m.at, m.vin, m.version),
                )
            return written

        return await self._write(save)

    async def read_events(self, after: int, limit: int, vin: str = "") -> list[OutboxEvent]:
        def read(db: sqlite3.Connection) -> list[OutboxEvent]:
            sql = "SELECT cursor, vin, entitlement_id, kind, payload FROM entitlement_events WHERE cursor > ?"
            # A uint64 from the client; SQLite compares signed 64-bit.
            args: tuple[Any, ...] = (cursor_arg(after),)
            if vin:
                sql += " AND vin = ?"
                args += (vin,)
            rows = db.execute(sql + " ORDER BY cursor LIMIT ?", (*args, limit))
            return [OutboxEvent(*row) for row in rows]

        return await self._run(read)

    async def first_cursor(self) -> int:
        return await self._run(lambda db: first_cursor(db, "entitlement_events"))

    async def prune_events(self, keep: int) -> int:
        # Only WatchEntitlementEvents reads the outbox: what reaches a car is decided from the
        # entitlements, sets and commands, so any old event may go (cursors keep counting up:
        # AUTOINCREMENT never reuses a pruned cursor).
        return await prune_keeping(self._transaction, "entitlement_events", keep)

    async def find_by_order(self, order_id: str) -> Entitlement | None:
        return await self._one(
            "SELECT entitlement_id, data, version FROM entitlements WHERE order_id = ?", order_id
        )

    async def get(self, entitlement_id: str) -> Entitlement | None:
        return await self._one(
            "SELECT entitlement_id, data, version FROM entitlements WHERE entitlement_id = ?", entitlement_id
        )

    async def refresh(self, entitlement_ids: Sequence[str]) -> builtins.list[Entitlement]:
        ids = list(entitlement_ids)

        def read(db: sqlite3.Connection) -> builtins.list[Entitlement]:
            marks = ",".join("?" * len(ids))
            rows = db.execute(
                f"SELECT entitlement_id, data, version FROM entitlements WHERE entitlement_id IN ({marks})",
                ids,
            ).fetchall()
            self._versions.refreshed({eid: version for eid, _data, version in rows})
            return [entitlement_from_json(data) for _eid, data, _version in rows]

        return await self._run(read) if ids else []

    async def _one(self, sql: str, key: str) -> Entitlement | None:
        def one(db: sqlite3.Connection) -> Entitlement | None:
            found = self._seen(db.execute(sql, (key,)))
            return found[0] if found else None

        return await self._run(one)

    async def history(self, entitlement_id: str) -> list[tuple[float, str | None, str]]:
        """(at, from_state, to_state) of every state change, oldest first (support, tests)."""

        def read(db: sqlite3.Connection) -> list[tuple[float, str | None, str]]:
            rows = db.execute(
                "SELECT at, from_state, to_state FROM entitlement_history WHERE entitlement_id = ?"
                " ORDER BY id",
                (entitlement_id,),
            )
            return [(a, f, t) for a, f, t in rows]

        return await self._run(read)

    # -- owners and accounts (R3, R4) -----------------------------------------------------------

    async def set_owner(self, vin: str, owner: str) -> None:
        def put(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO vehicle_owners (vin, account) VALUES (?, ?)"
                " ON CONFLICT(vin) DO UPDATE SET account = excluded.account",
                (vin, owner),
            )
            # An account id is an e-mail address (R1): linking it again means it was registered
            # again; the vehicles unlinked by the deletion stay unlinked.
            db.execute("DELETE FROM deleted_accounts WHERE account = ?", (owner,))

        await self._transaction(put)

    async def get_owner(self, vin: str) -> str | None:
        def get(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT account FROM vehicle_owners WHERE vin = ?", (vin,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(get)

    async def owned_vins(self, account: str) -> list[str]:
        def owned(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT vin FROM vehicle_owners WHERE account = ? ORDER BY vin", (account,))
            return [v for (v,) in rows]

        return await self._run(owned)

    async def delete_account(self, account: str, at: float) -> list[str]:
        def delete(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT vin FROM vehicle_owners WHERE account = ?", (account,))
            vins = {v for (v,) in rows}
            old = db.execute("SELECT vins FROM deleted_accounts WHERE account = ?", (account,)).fetchone()
            if old is not None:
                vins.update(json.loads(old[0]))
            result = sorted(vins)
            db.execute("DELETE FROM vehicle_owners WHERE account = ?", (account,))
            # R4, R7: the account's security code (and its lockout) goes with it.
            db.execute("DELETE FROM security_codes WHERE account = ?", (account,))
            db.execute(
                "INSERT INTO deleted_accounts (account, deleted_at, vins) VALUES (?, ?, ?)"
                " ON CONFLICT(account) DO UPDATE SET vins = excluded.vins",
                (account, at, json.dumps(result)),
            )
            return result

        return await self._transaction(delete)

    # -- entitlement sets and FoD commands ------------------------------------------------------

    async def get_set(self, vin: str, version: int) -> tuple[str, ...] | None:
        def get(db: sqlite3.Connection) -> tuple[str, ...] | None:
            row = db.execute(
                "SELECT entitlement_ids FROM entitlement_sets WHERE vin = ? AND version = ?", (vin, version)
            ).fetchone()
            return None if row is None else tuple(json.loads(row[0]))

        return await self._run(get)

    async def load_sets(self) -> list[VehicleSets]:
        def load(db: sqlite3.Connection) -> list[VehicleSets]:
            out = []
            for vin, recorded, published, acked in db.execute(
                "SELECT vin, MAX(version),"
                " MAX(CASE WHEN published_at IS NOT NULL THEN version END),"
                " MAX(CASE WHEN acked_at IS NOT NULL THEN version END)"
                " FROM entitlement_sets GROUP BY vin"
            ).fetchall():
                ids: frozenset[str] = frozenset()
                published_at = None
                if published is not None:
                    ids_json, published_at = db.execute(
                        "SELECT entitlement_ids, published_at FROM entitlement_sets"
                        " WHERE vin = ? AND version = ?",
                        (vin, published),
                    ).fetchone()
                    ids = frozenset(json.loads(ids_json))
                out.append(
                    VehicleSets(
                        vin=vin,
                        recorded=recorded,
                        published=published or 0,
                        published_ids=ids,
                        published_at=published_at,
                        acked=acked or 0,
                    )
                )
            return out

        return await self._run(load)

    async def get_command(self, command_id: str) -> CommandRecord | None:
        def get(db: sqlite3.Connection) -> CommandRecord | None:
            row = db.execute(
                f"SELECT {COMMAND_COLUMNS} FROM fod_commands WHERE command_id = ?", (command_id,)
            ).fetchone()
            return None if row is None else command_from_row(row)

        return await self._run(get)

    async def latest_commands(self) -> list[CommandRecord]:
        def latest(db: sqlite3.Connection) -> list[CommandRecord]:
            rows = db.execute(
                f"SELECT {COMMAND_COLUMNS} FROM fod_commands WHERE rowid IN ("
                " SELECT MAX(c.rowid) FROM fod_commands c JOIN entitlements e USING (entitlement_id)"
                " WHERE e.state != ? GROUP BY c.entitlement_id)",
                (REVOKED,),
            )
            return [command_from_row(r) for r in rows]

        return await self._run(latest)


    # Last in the class: after it, `list` in annotations would name this method.
    async def list(self, vin: str, include_ended: bool) -> builtins.list[Entitlement]:
        def list_(db: sqlite3.Connection) -> builtins.list[Entitlement]:
            sql = "SELECT entitlement_id, data, version FROM entitlements WHERE vin = ?"
            args: tuple[str, ...] = (vin,)
            if not include_ended:
                sql += " AND state != ?"
                args += (REVOKED,)
            return self._seen(db.execute(sql + " ORDER BY rowid", args))

        return await self._run(list_)
