"""Two entitlement engines on one PostgreSQL database (two gateways) recording a car's next
entitlement set from different views (one has not followed the other's grant yet): the second
to commit is refused (SetConflict), reads the car's sets again and records on top of them, so
the car never gets two different sets under one version and both gateways converge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from engine_harness import OWNER, VIN, at, order

from gateway._gen.telematics.v1 import downlink_pb2
from gateway.clock import ManualClock
from gateway.entitlements import EntitlementKind
from gateway.entitlements.domain.types import Entitlement, LifecycleEvent
from gateway.entitlements.engine import EntitlementEngine
from gateway.entitlements.ledger import OutboxEvent, SetMark, SetRecord, VersionConflict
from gateway.entitlements.ledger.base import CommandRecord
from gateway.entitlements.ledger.postgres import PostgresLedger
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.metrics import Metrics
from gateway.model import Presence, VehicleSession
from gateway.session.hub import EventHub
from gateway.store.pg import PoolSettings


class SteppedLedger(PostgresLedger):
    """The real PostgreSQL ledger; `before_sets` runs once just before the next save that
    records a set: another gateway's work slipped in between this one's view and its commit."""

    def __init__(self, *, url: str) -> None:
        super().__init__(url=url, settings=PoolSettings())
        self.before_sets: Callable[[], Awaitable[None]] | None = None

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
        hook, self.before_sets = (self.before_sets, None) if sets else (None, self.before_sets)
        if hook is not None:
            await hook()
        return await super().save(
            entitlements, events, commands=commands, sets=sets, published=published, acked=acked
        )


class Gateway:
    """One gateway's engine; the car's session is the same for both (a shared store)."""

    def __init__(self, ledger: SteppedLedger, clock: ManualClock, car: VehicleSession) -> None:
        self.car = car
        self.ledger = ledger
        self.metrics = Metrics()
        self.sent: list[downlink_pb2.EntitlementSet] = []
        self.engine = EntitlementEngine(
            ledger=ledger, clock=clock, metrics=self.metrics, publish=self._publish,
            session_of=lambda vin: car if vin == car.vin else None, hub=EventHub(), peers=ledger,
        )

    async def boot(self) -> None:
        """The car's Hello after a restart reached this gateway: what is pending becomes due."""
        await self.engine.on_vehicle_batch([VehicleUpdate(self.car, booted_online=True)])

    async def _publish(self, topic: str, payload: bytes) -> None:
        downlink = downlink_pb2.Downlink.FromString(payload)
        if downlink.HasField("entitlement_set"):
            self.sent.append(downlink.entitlement_set)


@pytest.fixture
async def make_gateway(pg_url: str, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[Gateway]]]:
    clock = ManualClock(start=at(2026, 3, 2))
    car = VehicleSession(vin=VIN, visited_country="DE", home_country="DE")
    car.presence, car.presence_changed_at = Presence.ONLINE, clock.now()
    ledgers: list[SteppedLedger] = []

    async def make() -> Gateway:
        ledger = SteppedLedger(url=pg_url)
        await ledger.open()
        ledgers.append(ledger)
        gateway = Gateway(ledger, clock, car)
        await gateway.engine.start()
        return gateway

    yield make
    for ledger in ledgers:
        await ledger.close()


def contents(*gateways: Gateway) -> dict[int, set[frozenset[str]]]:
    """Per set version sent to the car (by any gateway): the distinct contents sent under it."""
    out: dict[int, set[frozenset[str]]] = {}
    for g in gateways:
        for s in g.sent:
            out.setdefault(s.version, set()).add(frozenset(i.entitlement_id for i in s.items))
    return out


async def test_two_gateways_never_send_two_different_sets_under_one_version_and_converge(
    make_gateway: Callable[[], Awaitable[Gateway]],
) -> None:
    a, b = await make_gateway(), await make_gateway()
    await a.engine.set_owner(VIN, OWNER)
    e1 = await a.engine.grant(order(EntitlementKind.SERVICE, order_id="o-1"))
    await a.boot()
    await a.engine.tick()  # a records and sends set 1 {e1}
    await b.engine.tick()  # b follows: nothing for it to do
    e2 = await b.engine.grant(order(EntitlementKind.SERVICE, order_id="o-2", product_id="svc.navigation"))
    await b.boot()
    e3_ids: list[str] = []

    async def a_works_meanwhile() -> None:
        # Between b's view and b's commit: a grants e3, the car's next boot reaches a, and a,
        # following b's e2 too, records set 2 {e1, e2, e3}.
        e3 = await a.engine.grant(order(EntitlementKind.SERVICE, order_id="o-3", product_id="svc.charging"))
        e3_ids.append(e3.entitlement_id)
        for _attempt in range(2):  # a's view of e1 may predate b's boot: read again, then apply
            try:
                await a.boot()
                break
            except VersionConflict:
                continue
        await a.engine.tick()

    b.ledger.before_sets = a_works_meanwhile
    await b.engine.tick()  # b records set 2 {e1, e2}: refused, a took version 2
    assert b.metrics.registry.get_sample_value("gateway_entitlement_conflicts_total") == 1
    await b.engine.tick()  # b follows a's writes: set 2 is what b would send, nothing to do
    await a.engine.tick()
    every = {e1.entitlement_id, e2.entitlement_id, *e3_ids}
    assert contents(a, b) == {1: {frozenset({e1.entitlement_id})}, 2: {frozenset(every)}}
    stored = await a.ledger.get_set(VIN, 2)
    assert stored is not None and set(stored) == every
    [sets_a] = await a.ledger.sets_of([VIN])
    assert (sets_a.recorded, sets_a.published) == (2, 2)
