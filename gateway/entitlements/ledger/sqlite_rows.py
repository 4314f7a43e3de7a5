"""Rows of the SQLite ledger: the JSON form of an entitlement, and the writes that
`SqliteLedger` runs inside its transactions (on its database thread)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from gateway.entitlements import wire
from gateway.entitlements.domain.types import (
    Entitlement,
    EntitlementKind,
    EntitlementState,
    FodAction,
    GrantRequest,
    LifecycleEvent,
    PurchaserRole,
)
from gateway.entitlements.ledger.base import (
    CommandRecord,
    OutboxEvent,
    SetConflict,
    SetRecord,
    VersionConflict,
)
from gateway.store.versions import KnownVersions

REVOKED = EntitlementState.REVOKED.value

# -- codec -------------------------------------------------------------------------------------


_REQUEST_FIELDS = tuple(f.name for f in fields(GrantRequest))
_ENTITLEMENT_FIELDS = tuple(f.name for f in fields(Entitlement) if f.name != "request")


def entitlement_to_json(e: Entitlement) -> str:
    """The same text as ``json.dumps(dataclasses.asdict(e), ...)`` (every field but `request`
    is a plain value; the enums are StrEnums), without asdict's recursive deep copy: every
    entitlement write encodes one, and a restart storm writes each car's twice (delivered,
    active)."""
    data: dict[str, Any] = {name: getattr(e, name) for name in _ENTITLEMENT_FIELDS}
    data["request"] = {name: getattr(e.request, name) for name in _REQUEST_FIELDS}
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def entitlement_from_json(text: str) -> Entitlement:
    data = json.loads(text)
    req = _known(GrantRequest, data.pop("request"))
    req["kind"] = EntitlementKind(req["kind"])
    req["purchaser_role"] = PurchaserRole(req["purchaser_role"])
    data = _known(Entitlement, data)
    data["state"] = EntitlementState(data["state"])
    return Entitlement(request=GrantRequest(**req), **data)


def command_from_row(row: Sequence[Any]) -> CommandRecord:
    cid, eid, vin, action, sent_at, eligible_at, result_at, success = row
    return CommandRecord(
        command_id=cid,
        entitlement_id=eid,
        vin=vin,
        action=FodAction(action),
        sent_at=sent_at,
        eligible_at=eligible_at,
        result_at=result_at,
        success=None if success is None else bool(success),
    )


COMMAND_COLUMNS = "command_id, entitlement_id, vin, action, sent_at, eligible_at, result_at, success"


def write_entitlements(
    db: sqlite3.Connection,
    entitlements: Sequence[Entitlement],
    events: Sequence[LifecycleEvent],
    *,
    insert: bool,
    versions: KnownVersions,
    written: dict[str, int],
) -> list[OutboxEvent]:
    """`written` receives the version each entitlement now has (for `versions` after COMMIT)."""
    for e in entitlements:
        row = db.execute(
            "SELECT state, version FROM entitlements WHERE entitlement_id = ?", (e.entitlement_id,)
        ).fetchone()
        if row is not None and insert:
            raise sqlite3.IntegrityError(f"entitlement {e.entitlement_id} exists")
        data = entitlement_to_json(e)
        if row is None:
            db.execute(
                "INSERT INTO entitlements (entitlement_id, order_id, vin, state, updated_at, data, version)"
                " VALUES (?,?,?,?,?,?,1)",
                (e.entitlement_id, e.order_id, e.vin, e.state.value, e.updated_at, data),
            )
            written[e.entitlement_id] = 1
        else:
            old = written.get(e.entitlement_id, versions.expected(e.entitlement_id))
            old = row[1] if old is None else old  # never seen by this ledger: nothing to guard
            if not db.execute(
                "UPDATE entitlements SET state = ?, updated_at = ?, data = ?, version = ?"
                " WHERE entitlement_id = ? AND version = ?",
                (e.state.value, e.updated_at, data, old + 1, e.entitlement_id, old),
            ).rowcount:
                raise VersionConflict(
                    f"entitlement {e.entitlement_id}: changed since read (version {old})", [e.entitlement_id]
                )
            written[e.entitlement_id] = old + 1
        if row is None or row[0] != e.state.value:
            db.execute(
                "INSERT INTO entitlement_history (entitlement_id, at, from_state, to_state) VALUES (?,?,?,?)",
                (e.entitlement_id, e.updated_at, None if row is None else row[0], e.state.value),
            )
    outbox = []
    for ev in events:
        payload = wire.event_to_proto(ev).SerializeToString()
        cur = db.execute(
            "INSERT INTO entitlement_events (vin, entitlement_id, kind, payload) VALUES (?,?,?,?)",
            (ev.vin, ev.entitlement_id, ev.kind.value, payload),
        )
        assert cur.lastrowid is not None
        outbox.append(OutboxEvent(cur.lastrowid, ev.vin, ev.entitlement_id, ev.kind.value, payload))
    return outbox


def put_set(db: sqlite3.Connection, s: SetRecord) -> None:
    """As the PostgreSQL ledger: the same content again is fine, other content a SetConflict."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO entitlement_sets (vin, version, entitlement_ids, recorded_at)"
        " VALUES (?,?,?,?)",
        (s.vin, s.version, json.dumps(list(s.entitlement_ids)), s.recorded_at),
    )
    if cursor.rowcount:
        return
    row = db.execute(
        "SELECT entitlement_ids FROM entitlement_sets WHERE vin = ? AND version = ?", (s.vin, s.version)
    ).fetchone()
    if row is None or frozenset(json.loads(row[0])) != frozenset(s.entitlement_ids):
        raise SetConflict(f"entitlement set {s.version} of {s.vin}: recorded by another gateway", [s.vin])


def put_command(db: sqlite3.Connection, c: CommandRecord) -> None:
    db.execute(
        f"INSERT INTO fod_commands ({COMMAND_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"
        " ON CONFLICT(command_id) DO UPDATE SET result_at = excluded.result_at, success = excluded.success",
        (
            c.command_id,
            c.entitlement_id,
            c.vin,
            c.action.value,
            c.sent_at,
            c.eligible_at,
            c.result_at,
            None if c.success is None else int(c.success),
        ),
    )
