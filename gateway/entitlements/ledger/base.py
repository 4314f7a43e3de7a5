"""The ledger seam: durable entitlements, their outbox, owners, entitlement sets and FoD commands.

One small protocol with one implementation per database (`sqlite.SqliteLedger` for the
embedded deployment, `postgres.PostgresLedger` for store_url; gateway/store/backends.py
chooses). Every write that changes an entitlement also writes its outbox events in
the same transaction, so an event exists exactly when the change it reports does.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.entitlements.domain.types import Entitlement, FodAction, LifecycleEvent


class LedgerError(Exception):
    """The database refused or failed an operation."""


class DuplicateOrder(LedgerError):
    """`create` found the order id taken (the UNIQUE constraint behind grant idempotency)."""


class VersionConflict(LedgerError):
    """`save` found an entitlement changed since this ledger last read or wrote it (another
    gateway sharing the database wrote it: gateway/store/versions.py); nothing was written.
    `entitlement_ids`: the ones found changed (`refresh` them before trying again)."""

    def __init__(self, message: str, entitlement_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.entitlement_ids = tuple(entitlement_ids)


class SetConflict(VersionConflict):
    """`save` found an entitlement set version of a VIN recorded already with other content
    (another gateway recorded it first: two gateways must never send the car two different
    sets under one version); nothing was written. `vins`: read their sets again (`sets_of`),
    then record the next version."""

    def __init__(self, message: str, vins: Sequence[str]) -> None:
        super().__init__(message)
        self.vins = tuple(vins)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One written outbox row; `payload` is a telematics.v1.EntitlementEvent without cursor."""

    cursor: int
    vin: str
    entitlement_id: str
    kind: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SetRecord:
    """Entitlement set `version` of a VIN: which entitlements it contained (R13)."""

    vin: str
    version: int
    entitlement_ids: tuple[str, ...]
    recorded_at: float


@dataclass(frozen=True, slots=True)
class VehicleSets:
    """Where a VIN's entitlement sets stand.

    recorded: the highest version ever recorded (the next set is recorded + 1).
    published: the highest version published to the car; `published_ids` its content.
    acked: the highest version the car acked.
    """

    vin: str
    recorded: int = 0
    published: int = 0
    published_ids: frozenset[str] = frozenset()
    published_at: float | None = None
    acked: int = 0


@dataclass(frozen=True, slots=True)
class SetMark:
    """A set version was published to, or acked by, the car at `at`."""

    vin: str
    version: int
    at: float


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """An FoD command sent to the car (R17); the result fields are filled when it answers."""

    command_id: str
    entitlement_id: str
    vin: str
    action: FodAction
    sent_at: float
    eligible_at: float | None = None  # when the R17 window opened (latency metric)
    result_at: float | None = None
    success: bool | None = None


class Ledger(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def is_open(self) -> bool: ...

    async def probe(self) -> None:
        """Raise LedgerError unless the database takes a write now (readiness, cheap)."""
        ...

    async def load_live(self) -> list[Entitlement]:
        """Every entitlement not REVOKED."""
        ...

    async def load_sets(self) -> list[VehicleSets]: ...

    async def latest_commands(self) -> list[CommandRecord]:
        """The latest command sent for each live entitlement (answered or not)."""
        ...

    async def create(self, entitlement: Entitlement, events: Sequence[LifecycleEvent]) -> list[OutboxEvent]:
        """Insert a new entitlement; DuplicateOrder when its order id (or id) exists."""
        ...

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
        """Upsert entitlements, append outbox events and the rest in ONE transaction; return
        the events written, with their cursors, in order. Each update names the version of the
        entitlement this ledger last read or wrote: VersionConflict when the stored one moved
        on since (nothing is written then)."""
        ...

    async def read_events(self, after: int, limit: int, vin: str = "") -> list[OutboxEvent]: ...

    async def first_cursor(self) -> int:
        """The oldest retained outbox cursor, 0 when the outbox is empty."""
        ...

    async def prune_events(self, keep: int) -> int:
        """Delete all but the newest `keep` outbox events; return how many were deleted. The
        outbox only feeds WatchEntitlementEvents (the engine's work is the entitlement state,
        sets and commands), so pruning never holds back a delivery to a car."""
        ...

    async def find_by_order(self, order_id: str) -> Entitlement | None: ...

    async def get(self, entitlement_id: str) -> Entitlement | None: ...

    async def refresh(self, entitlement_ids: Sequence[str]) -> builtins.list[Entitlement]:
        """The stored entitlements `entitlement_ids`, read to replace the caller's view of them
        after a VersionConflict: the next write of each replaces the version read here."""
        ...

    async def set_owner(self, vin: str, owner: str) -> None: ...

    async def get_owner(self, vin: str) -> str | None: ...

    async def owned_vins(self, account: str) -> list[str]: ...

    async def delete_account(self, account: str, at: float) -> list[str]:
        """R4: unlink the account from its vehicles and remember the deletion; return the VINs
        (the same ones when called again)."""
        ...

    async def get_set(self, vin: str, version: int) -> tuple[str, ...] | None: ...

    async def get_command(self, command_id: str) -> CommandRecord | None: ...

    # Last in the class: after it, `list` in annotations would name this method.
    async def list(self, vin: str, include_ended: bool) -> builtins.list[Entitlement]: ...
