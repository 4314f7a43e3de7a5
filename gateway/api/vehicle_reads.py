"""Where GetVehicle and ListVehicles read a vehicle's session from.

One gateway (SQLite): its in-memory tracker, the fastest copy and already the whole truth.
Several gateways on one PostgreSQL database (store_url): the store, because each car's session
is kept in the memory of the gateway its messages reach; what is stored is what that gateway
last committed. Either way the answer is built from the session the same way (R22 redaction on
the way out, in gateway/api/vehicles.py), so both give the same fields.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from gateway.api.errors import ApiError
from gateway.model import VehicleSession
from gateway.session.tracker import SessionTracker
from gateway.store.base import Store, StoreError


class VehicleReads(Protocol):
    async def get(self, vin: str) -> VehicleSession | None:
        """The session of `vin`, None when the car has never connected."""
        ...

    async def page(self, after: str, limit: int) -> list[VehicleSession]:
        """Up to `limit` sessions with a VIN above `after` ("" = from the first), in VIN order."""
        ...


class MemoryReads:
    def __init__(self, tracker: SessionTracker) -> None:
        self._tracker = tracker

    async def get(self, vin: str) -> VehicleSession | None:
        return self._tracker.get(vin)

    async def page(self, after: str, limit: int) -> list[VehicleSession]:
        sessions = self._tracker.sessions
        return [sessions[v] for v in sorted(v for v in sessions if v > after)[:limit]]


class StoreReads:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, vin: str) -> VehicleSession | None:
        try:
            return await self._store.get_vehicle(vin)
        except StoreError as exc:
            raise _unavailable() from exc

    async def page(self, after: str, limit: int) -> list[VehicleSession]:
        try:
            return await self._store.list_vehicles(after, limit)
        except StoreError as exc:
            raise _unavailable() from exc


def _unavailable() -> ApiError:
    # The cause (with the database's address, never its password) stays in the chained error.
    return ApiError(grpc.StatusCode.UNAVAILABLE, "the vehicle store is unavailable")
