"""The restart storm's backend side: before the storm, every car's owner buys a service over
gRPC (``SetVehicleOwner``, then ``Grant`` of a SERVICE entitlement), many calls in flight.

A service granted while the car is online stays PENDING until the car's next boot while online
(R13), so after this phase every car has one entitlement waiting for its restart; the storm
then measures boot Hello -> the EntitlementSet holding it, at the car (load/worker.py).
The product is one the catalogue (roaming/products.toml) offers for every model and model year
of the generated fleet, and its service is offered in every home country of the fleet (R12).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from gateway._gen.telematics.v1 import entitlements_pb2 as ent
from gateway._gen.telematics.v1 import entitlements_pb2_grpc as ent_grpc
from gateway.api.client import aio_channel

SERVICE = "remote-services"  # product id = service id (roaming/products.toml)
IN_FLIGHT = 64


@dataclass(slots=True)
class GrantPhase:
    granted: list[str] = field(default_factory=list)  # VINs whose Grant answered
    refused: Counter[str] = field(default_factory=Counter)  # gRPC status code -> calls
    states: Counter[str] = field(default_factory=Counter)  # state of the granted entitlements
    first_error: str = ""
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "grants": len(self.granted),
            "grants_refused": dict(self.refused),
            "grant_states": dict(self.states),
            "grant_first_error": self.first_error,
            "grant_phase_s": round(self.seconds, 3),
            "grants_per_s": round(len(self.granted) / self.seconds, 1) if self.seconds else None,
        }


def owner_of(vin: str) -> str:
    return f"owner.{vin.lower()}@example.com"


async def grant_all(target: str, token: str, vins: Sequence[str], order_prefix: str,
                    in_flight: int = IN_FLIGHT) -> GrantPhase:
    """Owner, then a SERVICE grant of ``SERVICE`` for every VIN, ``in_flight`` cars at a time."""
    phase = GrantPhase()
    sem = asyncio.Semaphore(in_flight)
    started = time.perf_counter()
    async with aio_channel(target, token) as channel:
        stub = ent_grpc.EntitlementServiceStub(channel)

        async def one(vin: str) -> None:
            owner = owner_of(vin)
            async with sem:
                try:
                    await stub.SetVehicleOwner(ent.SetVehicleOwnerRequest(vin=vin, owner=owner))
                    e = await stub.Grant(ent.GrantRequest(
                        order_id=f"{order_prefix}-{vin}", vin=vin, product_id=SERVICE,
                        kind=ent.ENTITLEMENT_KIND_SERVICE, purchaser=owner,
                        purchaser_role=ent.PURCHASER_ROLE_OWNER))
                except grpc.aio.AioRpcError as exc:
                    phase.refused[exc.code().name] += 1
                    phase.first_error = phase.first_error or f"{vin}: {exc.code().name} {exc.details()}"
                    return
            phase.granted.append(vin)
            phase.states[ent.EntitlementState.Name(e.state)] += 1

        await asyncio.gather(*(one(v) for v in vins))
    phase.seconds = time.perf_counter() - started
    return phase


def run_grants(target: str, token: str, vins: Sequence[str], order_prefix: str) -> GrantPhase:
    return asyncio.run(grant_all(target, token, vins, order_prefix))
