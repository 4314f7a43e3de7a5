"""The store seam: a small protocol with one implementation per database (sqlite.SqliteStore,
postgres.PostgresStore; gateway/store/backends.py chooses)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.model import VehicleSession


class StoreError(Exception):
    """The database refused or failed an operation."""


class StoreConflict(Exception):
    """A shared store refused a batch: another gateway committed some of its cars after this one
    last read or wrote them, so its snapshots of those cars are based on an old view. Nothing of
    the batch was written (no snapshot, no event). Not a StoreError on purpose: retrying the same
    writes can never succeed, the batch must be applied again on the stored state
    (gateway/pipeline.py)."""

    def __init__(self, vins: Sequence[str]) -> None:
        self.vins = tuple(vins)
        shown = ", ".join(self.vins[:5]) + (f" and {len(self.vins) - 5} more" if len(self.vins) > 5 else "")
        super().__init__(f"{len(self.vins)} vehicles were written by another gateway meanwhile: {shown}")


@dataclass(frozen=True, slots=True)
class PendingEvent:
    vin: str
    kind: str
    payload: bytes  # serialized telematics.v1.VehicleEvent without its cursor
    # Non-empty: the event is written only the first time this key is seen for the VIN
    # (R28: a charging session record sent twice is recorded once).
    dedupe_key: str = ""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    cursor: int
    vin: str
    payload: bytes
    kind: str = ""


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def is_open(self) -> bool: ...

    async def probe(self) -> None:
        """Raise StoreError unless the database takes a write now (readiness, cheap)."""
        ...

    async def load_sessions(self) -> list[VehicleSession]: ...

    # Reads for the vehicle API when several gateways share the database: what is stored is
    # what the gateway that owns each car last wrote. Reads only: unlike load_sessions they do
    # not move the version guards (a gateway's own snapshots are still written only over what
    # it last read for its pipeline or wrote itself).
    async def get_vehicle(self, vin: str) -> VehicleSession | None:
        """The stored session of `vin`, None when none is stored."""
        ...

    async def list_vehicles(self, after: str, limit: int) -> list[VehicleSession]:
        """Up to `limit` stored sessions with a VIN above `after` ("" = from the first), in
        VIN order."""
        ...

    async def commit_batch(
        self, vehicles: Sequence[VehicleSession], events: Sequence[PendingEvent]
    ) -> list[StoredEvent]:
        """Write snapshots and events in one transaction; return the events written."""
        ...

    async def read_events(self, after: int, limit: int, vin: str = "") -> list[StoredEvent]: ...

    async def first_cursor(self) -> int:
        """The oldest retained cursor, 0 when the log is empty."""
        ...

    async def prune_events(self, keep: int) -> int: ...


class SharedStore(Store, Protocol):
    """A store several gateways write (PostgreSQL): a car's messages may reach any of them, so
    each refreshes the cars of a batch before applying it, and a commit over a car another
    gateway wrote meanwhile raises StoreConflict instead of skipping the snapshot."""

    async def fresh_sessions(self, vins: Sequence[str], *, every: bool = False) -> list[VehicleSession]:
        """The stored sessions of those of `vins` whose stored version differs from the one this
        store last read or wrote, or that it never saw (every=True: all stored ones of `vins`),
        in one query. Their versions become what this store's next writes of them replace."""
        ...
