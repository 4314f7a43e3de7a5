"""What other gateways sharing the PostgreSQL database wrote, for the engine's in-memory view.

Every change of an entitlement is committed with its outbox events (ledger/base.py), and the
PostgreSQL outbox hands out cursors in commit order (gateway/store/pg_outbox.py): reading the
events after the last cursor seen names every entitlement changed since. The engine reads them
again (`Ledger.refresh`) unless it wrote them itself, so its view follows the other gateways'
grants, revocations and deliveries without a conflict or a restart. SQLite (one gateway per
file) has no other writer and no follower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.entitlements.ledger.base import CommandRecord, OutboxEvent, VehicleSets

READ_CHUNK = 500


class PeerLedger(Protocol):
    """The reads a follower needs: a ledger shared with other gateways (PostgresLedger)."""

    async def last_cursor(self) -> int:
        """The newest outbox cursor, 0 when the outbox is empty."""
        ...

    async def read_events(self, after: int, limit: int, vin: str = "") -> list[OutboxEvent]: ...

    async def sets_of(self, vins: Sequence[str]) -> list[VehicleSets]:
        """`load_sets` for these VINs only."""
        ...

    async def latest_commands_of(self, vins: Sequence[str]) -> list[CommandRecord]:
        """`latest_commands` for these VINs only."""
        ...


@dataclass(frozen=True, slots=True)
class PeerChanges:
    """Entitlements another gateway changed, and their cars."""

    entitlement_ids: tuple[str, ...]
    vins: tuple[str, ...]


class OutboxFollower:
    """The outbox cursor this gateway has seen, and the cursors it wrote itself (skipped)."""

    def __init__(self, ledger: PeerLedger) -> None:
        self.ledger = ledger
        self.cursor = 0
        self._own: set[int] = set()

    async def start(self) -> None:
        """Before the engine loads its view: whatever commits after this is read again."""
        self.cursor = await self.ledger.last_cursor()
        self._own.clear()

    def wrote(self, written: Sequence[OutboxEvent]) -> None:
        self._own.update(w.cursor for w in written if w.cursor > self.cursor)

    async def changes(self) -> PeerChanges:
        """The entitlements others changed since the last call (each once, in commit order)."""
        ids: dict[str, None] = {}
        vins: dict[str, None] = {}
        while True:
            events = await self.ledger.read_events(self.cursor, READ_CHUNK)
            for ev in events:
                if ev.cursor in self._own:
                    self._own.discard(ev.cursor)
                    continue
                ids[ev.entitlement_id] = None
                vins[ev.vin] = None
            if events:
                self.cursor = events[-1].cursor
                # Own cursors below it were pruned before this read: forget them.
                self._own = {c for c in self._own if c > self.cursor}
            if len(events) < READ_CHUNK:
                return PeerChanges(tuple(ids), tuple(vins))
