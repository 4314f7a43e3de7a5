"""The PostgreSQL outboxes (vehicle_events, entitlement_events): cursors in commit order.

Watch streams read an outbox by cursor: "everything after C", then they move C to the last
cursor seen. With a bare sequence (bigserial) a cursor is taken at INSERT but becomes visible
at COMMIT, and transactions commit in any order: one that took 10 and commits after one that
took 11 is never seen by a reader that read 11 in between and moved past it. SQLite cannot do
this (one writer at a time); PostgreSQL with a pool, or several gateways, does.

The design: a writer takes a transaction-scoped advisory lock (`pg_advisory_xact_lock`, one
per outbox) just before it inserts outbox rows, and holds it to its COMMIT or ROLLBACK. Cursors
are therefore handed out in commit order: the next writer takes its numbers only after the
previous one's rows are visible (PostgreSQL makes a commit visible before it releases the
transaction's locks), so every reader that sees cursor N sees every committed cursor below N.
A rolled-back writer leaves a gap, which readers skip harmlessly.

Why this and not a snapshot bound (readers stop below `pg_snapshot_xmin` with the xid stored
per row): the lock keeps readers as simple as SQLite's (`cursor > C`), needs no extra column
or per-read snapshot arithmetic, and costs writers only the outbox part of their transaction:
the lock is taken last, after the snapshots and entitlements are written, so what is serialised
is one INSERT and the COMMIT. Writers of different outboxes do not wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.store.pg import PgConnection, PgExecutor
from gateway.store.sqlite_thread import MAX_INTEGER


@dataclass(frozen=True, slots=True)
class Outbox:
    table: str                  # a constant of this module, never input
    columns: tuple[str, ...]    # written by `append`, read back after `cursor`
    types: tuple[str, ...]      # their PostgreSQL types (for unnest)
    lock_key: int               # the advisory lock that orders this outbox's writers
    channel: str                # NOTIFY channel: the highest cursor of each commit (pg_notify.py)


VEHICLE_EVENTS = Outbox(
    "vehicle_events", ("vin", "kind", "payload"), ("text", "text", "bytea"), 0x67770001,
    "gateway_vehicle_events",
)
ENTITLEMENT_EVENTS = Outbox(
    "entitlement_events",
    ("vin", "entitlement_id", "kind", "payload"),
    ("text", "text", "text", "bytea"),
    0x67770002,
    "gateway_entitlement_events",
)


def cursor_arg(after: int) -> int:
    """A client's uint64 `after` as a bigint with the same meaning (nothing is beyond it)."""
    return min(after, MAX_INTEGER)


async def append(conn: PgConnection, outbox: Outbox, rows: Sequence[tuple[Any, ...]]) -> list[int]:
    """Insert `rows` (values of outbox.columns) inside the caller's transaction; their cursors,
    in order. Takes the outbox's lock (held until the caller's transaction ends): call it as
    the transaction's last write.

    Also queues a NOTIFY on outbox.channel with the highest cursor (nothing else: no VIN, no
    data). PostgreSQL delivers it only if the transaction commits, and after the rows are
    visible, so every gateway listening (gateway/store/pg_notify.py) can wake its Watch streams,
    which then read the rows by cursor as after a local commit."""
    if not rows:
        return []
    await conn.execute("SELECT pg_advisory_xact_lock($1)", outbox.lock_key)
    cursors = await append_unordered(conn, outbox, rows)
    await conn.execute("SELECT pg_notify($1, $2)", outbox.channel, str(cursors[-1]))
    return cursors


async def append_unordered(
    conn: PgConnection, outbox: Outbox, rows: Sequence[tuple[Any, ...]]
) -> list[int]:
    """The INSERT of `append` without the lock: bare sequence numbering. Only `append` and the
    test that shows why the lock is needed call it."""
    cols = ", ".join(outbox.columns)
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(outbox.types))
    names = ", ".join(f"c{i}" for i in range(len(outbox.columns)))
    records = await conn.fetch(
        f"INSERT INTO {outbox.table} ({cols})"
        f" SELECT {names} FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n) ORDER BY n"
        " RETURNING cursor",
        *([row[i] for row in rows] for i in range(len(outbox.columns))),
    )
    # Numbers are drawn in the order the SELECT yields the rows: sorted, they match `rows`.
    return sorted(int(r["cursor"]) for r in records)


async def read(
    conn: PgExecutor, outbox: Outbox, after: int, limit: int, vin: str = ""
) -> list[asyncpg.Record]:
    """Rows after cursor `after` (oldest first): cursor, then outbox.columns."""
    sql = f"SELECT cursor, {', '.join(outbox.columns)} FROM {outbox.table} WHERE cursor > $1"
    args: list[Any] = [cursor_arg(after)]
    if vin:
        sql += " AND vin = $2"
        args.append(vin)
    return list(await conn.fetch(f"{sql} ORDER BY cursor LIMIT ${len(args) + 1}", *args, limit))


async def last_cursor(conn: PgExecutor, outbox: Outbox) -> int:
    """The newest cursor, 0 when the outbox is empty."""
    value = await conn.fetchval(f"SELECT MAX(cursor) FROM {outbox.table}")
    return 0 if value is None else int(value)


async def first_cursor(conn: PgExecutor, outbox: Outbox) -> int:
    value = await conn.fetchval(f"SELECT MIN(cursor) FROM {outbox.table}")
    return 0 if value is None else int(value)


async def prune_keeping(conn: PgExecutor, outbox: Outbox, keep: int) -> int:
    """Delete all but the newest `keep` cursors; the number deleted. The identity column never
    hands out a pruned cursor again."""
    status = await conn.execute(
        f"DELETE FROM {outbox.table} WHERE cursor <= (SELECT MAX(cursor) FROM {outbox.table}) - $1", keep
    )
    return int(status.split()[-1])
