"""PostgreSQL ledger (store_url): the same observable behaviour as the SQLite ledger, in the
database the vehicle store uses.

Entitlements are kept whole as JSON (the same codec as SQLite) with the columns the queries
need beside it; `order_id` is UNIQUE, the backstop behind idempotent grants. Outbox cursors are
handed out in commit order (gateway/store/pg_outbox.py). Lists are native arrays, booleans
booleans; `seq` columns keep the insertion order SQLite's rowid gave. Each update names the
version it replaces (gateway/store/versions.py); this ledger's writes take turns (a lock, as
SQLite's one thread does), so they never refuse each other.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from gateway.entitlements import wire
from gateway.entitlements.domain.types import Entitlement, LifecycleEvent
from gateway.entitlements.ledger.base import (
    CommandRecord,
    DuplicateOrder,
    LedgerError,
    OutboxEvent,
    SetConflict,
    SetMark,
    SetRecord,
    VehicleSets,
    VersionConflict,
)
from gateway.entitlements.ledger.sqlite_rows import (
    COMMAND_COLUMNS,
    REVOKED,
    command_from_row,
    entitlement_from_json,
    entitlement_to_json,
)
from gateway.store import pg_outbox
from gateway.store.pg import OPEN_ERRORS, PG_ERRORS, PgConnection, PgDatabase, PoolSettings, describe
from gateway.store.pg_outbox import ENTITLEMENT_EVENTS
from gateway.store.versions import KnownVersions

T = TypeVar("T")


class PostgresLedger:
    def __init__(self, *, url: str, settings: PoolSettings | None = None) -> None:
        """url: postgresql://user@host:port/db; the schema is migrated at open."""
        self._db = PgDatabase(url=url, name="gateway-ledger", settings=settings)
        self._versions = KnownVersions()
        self._write_lock = asyncio.Lock()

    @property
    def display(self) -> str:
        return self._db.display

    @property
    def database(self) -> PgDatabase:
        """The pool, shared with the R7 security codes (gateway/security/code_records_postgres.py),
        which live beside the accounts."""
        return self._db

    @property
    def is_open(self) -> bool:
        return self._db.is_open

    async def _run(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except asyncpg.UniqueViolationError as exc:  # the only constraints: entitlement id, order id
            raise DuplicateOrder(f"postgresql {self.display}: {exc}") from exc
        except PG_ERRORS as exc:
            raise LedgerError(f"postgresql {self.display}: {describe(exc)}") from exc

    async def _transaction(self, fn: Callable[[PgConnection], Awaitable[T]]) -> T:
        async def tx() -> T:
            async with self._db.pool.acquire() as conn, conn.transaction():
                return await fn(conn)

        return await self._run(tx())

    async def _write(self, fn: Callable[[PgConnection, dict[str, int]], Awaitable[T]]) -> T:
        """A transaction that writes entitlements: the versions it wrote are remembered once
        it committed."""
        async with self._write_lock:
            written: dict[str, int] = {}
            result = await self._transaction(lambda conn: fn(conn, written))
            self._versions.written(written)
            return result

    async def open(self) -> None:
        try:
            await self._db.open()
        except OPEN_ERRORS as exc:
            raise LedgerError(f"cannot open postgresql database {self.display}: {exc}") from exc

    async def close(self) -> None:
        await self._db.close()

    async def probe(self) -> None:
        await self._run(self._db.probe())

    # -- entitlements and the outbox ------------------------------------------------------------

    async def load_live(self) -> list[Entitlement]:
        async def load() -> list[Entitlement]:
            rows = await self._db.pool.fetch(
                "SELECT entitlement_id, data, version FROM entitlements WHERE state != $1 ORDER BY seq",
                REVOKED,
            )
            self._versions.reset({r["entitlement_id"]: int(r["version"]) for r in rows})
            return [entitlement_from_json(r["data"]) for r in rows]

        return await self._run(load())

    async def _entitlements(self, where: str, *args: object) -> list[Entitlement]:
        async def load() -> list[Entitlement]:
            rows = await self._db.pool.fetch(
                f"SELECT entitlement_id, data, version FROM entitlements WHERE {where} ORDER BY seq", *args
            )
            for r in rows:
                self._versions.seen(r["entitlement_id"], int(r["version"]))
            return [entitlement_from_json(r["data"]) for r in rows]

        return await self._run(load())

    async def create(self, entitlement: Entitlement, events: Sequence[LifecycleEvent]) -> list[OutboxEvent]:
        payloads = _payloads(events)
        return await self._write(
            lambda c, written: _write_entitlements(
                c, [entitlement], events, payloads, insert=True, versions=self._versions, written=written
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
        payloads = _payloads(events)  # before the transaction: an event without a wire form writes nothing

        async def save(conn: PgConnection, written: dict[str, int]) -> list[OutboxEvent]:
            for c in commands:
                await conn.execute(
                    f"INSERT INTO fod_commands ({COMMAND_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)"
                    " ON CONFLICT (command_id) DO UPDATE SET result_at = excluded.result_at,"
                    " success = excluded.success",
                    c.command_id, c.entitlement_id, c.vin, c.action.value, c.sent_at, c.eligible_at,
                    c.result_at, c.success,
                )
            for s in sets:
                await _record_set(conn, s)
            for column, marks in (("published_at", published), ("acked_at", acked)):
                for m in marks:
                    await conn.execute(
                        f"UPDATE entitlement_sets SET {column} = COALESCE({column}, $1)"
                        " WHERE vin = $2 AND version = $3",
                        m.at, m.vin, m.version,
                    )
            # Last: the outbox lock is held from here to the commit.
            return await _write_entitlements(
                conn, entitlements, events, payloads, insert=False, versions=self._versions, written=written
            )

        return await self._write(save)

    async def read_events(self, after: int, limit: int, vin: str = "") -> list[OutboxEvent]:
        async def read() -> list[OutboxEvent]:
            rows = await pg_outbox.read(self._db.pool, ENTITLEMENT_EVENTS, after, limit, vin)
            return [
                OutboxEvent(int(r["cursor"]), r["vin"], r["entitlement_id"], r["kind"], r["payload"])
                for r in rows
            ]

        return await self._run(read())

    async def first_cursor(self) -> int:
        return await self._run(self._first_cursor())

    async def last_cursor(self) -> int:
        return await self._run(pg_outbox.last_cursor(self._db.pool, ENTITLEMENT_EVENTS))

    async def _first_cursor(self) -> int:
        return await pg_outbox.first_cursor(self._db.pool, ENTITLEMENT_EVENTS)

    async def prune_events(self, keep: int) -> int:
        # Only WatchEntitlementEvents reads the outbox (see SqliteLedger.prune_events).
        return await self._run(self._prune(keep))

    async def _prune(self, keep: int) -> int:
        return await pg_outbox.prune_keeping(self._db.pool, ENTITLEMENT_EVENTS, keep)

    async def find_by_order(self, order_id: str) -> Entitlement | None:
        return await self._one("order_id = $1", order_id)

    async def get(self, entitlement_id: str) -> Entitlement | None:
        return await self._one("entitlement_id = $1", entitlement_id)

    async def refresh(self, entitlement_ids: Sequence[str]) -> list[Entitlement]:
        async def read() -> list[Entitlement]:
            rows = await self._db.pool.fetch(
                "SELECT entitlement_id, data, version FROM entitlements"
                " WHERE entitlement_id = ANY($1::text[])",
                list(entitlement_ids),
            )
            async with self._write_lock:  # the versions are touched under it (see _write)
                self._versions.refreshed({r["entitlement_id"]: int(r["version"]) for r in rows})
            return [entitlement_from_json(r["data"]) for r in rows]

        return await self._run(read())

    async def _one(self, where: str, key: str) -> Entitlement | None:
        found = await self._entitlements(where, key)
        return found[0] if found else None

    async def history(self, entitlement_id: str) -> list[tuple[float, str | None, str]]:
        """(at, from_state, to_state) of every state change, oldest first (support, tests)."""

        async def read() -> list[tuple[float, str | None, str]]:
            rows = await self._db.pool.fetch(
                "SELECT at, from_state, to_state FROM entitlement_history WHERE entitlement_id = $1"
                " ORDER BY id",
                entitlement_id,
            )
            return [(r["at"], r["from_state"], r["to_state"]) for r in rows]

        return await self._run(read())

    # -- owners and accounts (R3, R4) -----------------------------------------------------------

    async def set_owner(self, vin: str, owner: str) -> None:
        async def put(conn: PgConnection) -> None:
            await conn.execute(
                "INSERT INTO vehicle_owners (vin, account) VALUES ($1, $2)"
                " ON CONFLICT (vin) DO UPDATE SET account = excluded.account",
                vin, owner,
            )
            # Registered again with the same e-mail (R1): the vehicles unlinked stay unlinked.
            await conn.execute("DELETE FROM deleted_accounts WHERE account = $1", owner)

        await self._transaction(put)

    async def get_owner(self, vin: str) -> str | None:
        async def get() -> str | None:
            value = await self._db.pool.fetchval("SELECT account FROM vehicle_owners WHERE vin = $1", vin)
            return None if value is None else str(value)

        return await self._run(get())

    async def owned_vins(self, account: str) -> list[str]:
        async def owned() -> list[str]:
            rows = await self._db.pool.fetch(
                "SELECT vin FROM vehicle_owners WHERE account = $1 ORDER BY vin", account
            )
            return [r["vin"] for r in rows]

        return await self._run(owned())

    async def delete_account(self, account: str, at: float) -> list[str]:
        async def delete(conn: PgConnection) -> list[str]:
            rows = await conn.fetch("DELETE FROM vehicle_owners WHERE account = $1 RETURNING vin", account)
            vins = {r["vin"] for r in rows}
            old = await conn.fetchval(
                "SELECT vins FROM deleted_accounts WHERE account = $1 FOR UPDATE", account
            )
            if old is not None:
                vins.update(old)
            result = sorted(vins)
            # R4, R7: the account's security code (and its lockout) goes with it.
            await conn.execute("DELETE FROM security_codes WHERE account = $1", account)
            await conn.execute(
                "INSERT INTO deleted_accounts (account, deleted_at, vins) VALUES ($1, $2, $3)"
                " ON CONFLICT (account) DO UPDATE SET vins = excluded.vins",
                account, at, result,
            )
            return result

        return await self._transaction(delete)

    # -- entitlement sets and FoD commands ------------------------------------------------------

    async def get_set(self, vin: str, version: int) -> tuple[str, ...] | None:
        async def get() -> tuple[str, ...] | None:
            ids = await self._db.pool.fetchval(
                "SELECT entitlement_ids FROM entitlement_sets WHERE vin = $1 AND version = $2", vin, version
            )
            return None if ids is None else tuple(ids)

        return await self._run(get())

    async def load_sets(self) -> list[VehicleSets]:
        return await self._run(self._sets(""))

    async def sets_of(self, vins: Sequence[str]) -> list[VehicleSets]:
        """`load_sets` for these VINs (engine/_follow.py: after another gateway's write)."""
        return await self._run(self._sets(" WHERE vin = ANY($1::text[])", list(vins)))

    async def _sets(self, where: str, *args: object) -> list[VehicleSets]:
        rows = await self._db.pool.fetch(
            "SELECT s.vin, s.recorded, s.published, s.acked, p.entitlement_ids, p.published_at"
            " FROM (SELECT vin, MAX(version) AS recorded,"
            "       MAX(version) FILTER (WHERE published_at IS NOT NULL) AS published,"
            "       MAX(version) FILTER (WHERE acked_at IS NOT NULL) AS acked"
            f"       FROM entitlement_sets{where} GROUP BY vin) s"
            " LEFT JOIN entitlement_sets p ON p.vin = s.vin AND p.version = s.published"
            " ORDER BY s.vin",
            *args,
        )
        return [
            VehicleSets(
                vin=r["vin"],
                recorded=r["recorded"],
                published=r["published"] or 0,
                published_ids=frozenset(r["entitlement_ids"] or ()),
                published_at=r["published_at"],
                acked=r["acked"] or 0,
            )
            for r in rows
        ]

    async def get_command(self, command_id: str) -> CommandRecord | None:
        async def get() -> CommandRecord | None:
            row = await self._db.pool.fetchrow(
                f"SELECT {COMMAND_COLUMNS} FROM fod_commands WHERE command_id = $1", command_id
            )
            return None if row is None else command_from_row(tuple(row))

        return await self._run(get())

    async def latest_commands(self) -> list[CommandRecord]:
        return await self._run(self._latest_commands(""))

    async def latest_commands_of(self, vins: Sequence[str]) -> list[CommandRecord]:
        """`latest_commands` for these VINs (engine/_follow.py)."""
        return await self._run(self._latest_commands(" AND c.vin = ANY($2::text[])", list(vins)))

    async def _latest_commands(self, where: str, *args: object) -> list[CommandRecord]:
        rows = await self._db.pool.fetch(
            f"SELECT DISTINCT ON (c.entitlement_id) {_qualified('c', COMMAND_COLUMNS)}"
            " FROM fod_commands c JOIN entitlements e USING (entitlement_id)"
            f" WHERE e.state != $1{where} ORDER BY c.entitlement_id, c.seq DESC",
            REVOKED,
            *args,
        )
        return [command_from_row(tuple(r)) for r in rows]

    # Last in the class: after it, `list` in annotations would name this method.
    async def list(self, vin: str, include_ended: bool) -> builtins.list[Entitlement]:
        if include_ended:
            return await self._entitlements("vin = $1", vin)
        return await self._entitlements("vin = $1 AND state != $2", vin, REVOKED)


def _qualified(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


async def _record_set(conn: PgConnection, s: SetRecord) -> None:
    """Set `s.version` of the VIN, unless it is recorded already. The same content again (a
    retried batch, or two gateways that agree) is fine; other content is a SetConflict: the
    version was taken by another gateway whose view differed (a membership change), and the
    car must never get two different sets under one version."""
    inserted = await conn.fetchval(
        "INSERT INTO entitlement_sets (vin, version, entitlement_ids, recorded_at)"
        " VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING RETURNING true",
        s.vin, s.version, list(s.entitlement_ids), s.recorded_at,
    )
    if inserted:
        return
    # A new statement: it sees the other transaction's row, committed by now (the INSERT waited).
    stored = await conn.fetchval(
        "SELECT entitlement_ids FROM entitlement_sets WHERE vin = $1 AND version = $2", s.vin, s.version
    )
    if stored is None or frozenset(stored) != frozenset(s.entitlement_ids):
        raise SetConflict(f"entitlement set {s.version} of {s.vin}: recorded by another gateway", [s.vin])


def _payloads(events: Sequence[LifecycleEvent]) -> list[bytes]:
    """The outbox form of each event; KeyError for an internal kind (never in the outbox)."""
    return [wire.event_to_proto(ev).SerializeToString() for ev in events]


async def _write_entitlements(
    conn: PgConnection,
    entitlements: Sequence[Entitlement],
    events: Sequence[LifecycleEvent],
    payloads: Sequence[bytes],
    *,
    insert: bool,
    versions: KnownVersions,
    written: dict[str, int],
) -> list[OutboxEvent]:
    """`written` receives the version each entitlement now has (for `versions` after COMMIT).
    Rows are locked in entitlement-id order, the same in every gateway (no deadlock between two
    gateways writing overlapping entitlements)."""
    for e in sorted(entitlements, key=lambda e: e.entitlement_id):
        row = await conn.fetchrow(
            "SELECT state, version FROM entitlements WHERE entitlement_id = $1", e.entitlement_id
        )
        old_state = None if row is None else row["state"]
        if row is not None and insert:
            raise DuplicateOrder(f"entitlement {e.entitlement_id} exists")
        if row is None:
            await conn.execute(
                "INSERT INTO entitlements (entitlement_id, order_id, vin, state, updated_at, data, version)"
                " VALUES ($1,$2,$3,$4,$5,$6,1)",
                e.entitlement_id, e.order_id, e.vin, e.state.value, e.updated_at, entitlement_to_json(e),
            )
            written[e.entitlement_id] = 1
        else:
            old = written.get(e.entitlement_id, versions.expected(e.entitlement_id))
            old = int(row["version"]) if old is None else old  # never seen by this ledger: nothing to guard
            status = await conn.execute(
                "UPDATE entitlements SET state = $1, updated_at = $2, data = $3, version = $4"
                " WHERE entitlement_id = $5 AND version = $6",
                e.state.value, e.updated_at, entitlement_to_json(e), old + 1, e.entitlement_id, old,
            )
            if status == "UPDATE 0":
                raise VersionConflict(
                    f"entitlement {e.entitlement_id}: changed since read (version {old})", [e.entitlement_id]
                )
            written[e.entitlement_id] = old + 1
        if old_state != e.state.value:
            await conn.execute(
                "INSERT INTO entitlement_history (entitlement_id, at, from_state, to_state)"
                " VALUES ($1,$2,$3,$4)",
                e.entitlement_id, e.updated_at, old_state, e.state.value,
            )
    rows = [(ev.vin, ev.entitlement_id, ev.kind.value, p) for ev, p in zip(events, payloads, strict=True)]
    cursors = await pg_outbox.append(conn, ENTITLEMENT_EVENTS, rows)
    return [OutboxEvent(c, *row) for c, row in zip(cursors, rows, strict=True)]
