"""Issue 10's acceptance: a fleet on two gateways, one SIGKILLed in the middle, nothing lost.

Real parts: one Mosquitto started by the test (the gateways log in on its plain listener as to
an external broker), gateways as `python -m gateway run` processes, real gRPC clients, cars on
aiomqtt. On PostgreSQL two gateways share the database and the broker's shared subscription
(two ingest slots, a short lease); one of them, the victim, is killed with SIGKILL while the
cars publish, FoD commands and results are on their way and grants are being made, and the
survivor carries on. On SQLite the same fault: one gateway, killed and started again on its
files.

What must hold afterwards, read on the survivor:
* every granted service is delivered once its car boots (grants made around the kill too) and
  the car's ack makes it active;
* every FoD is unlocked and billed exactly once (R14), counted in the entitlement event log;
* every QoS 1 uplink a car got PUBACK for was processed: each car publishes charging records
  (R28) whose session ids must all be in the vehicle event log, once each (the store keeps a
  record once however often it comes), and each car's stored state and last sequence are its
  last message's;
* both Watch streams (WatchVehicleEvents, WatchEntitlementEvents), read on the victim from the
  start and resumed on the survivor after the last cursor they got, together are exactly the
  log the survivor replays from cursor 0.

The R17 idle wait is shortened by configuration (fod_idle_s = 1), as in
test_entitlements_crash.py: a subprocess has no injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import eventually, suite_channel
from test_cli_run import RunningGateway
from test_ingest_slots import GROUP, broker_url
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, downlink_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway._gen.telematics.v1 import entitlements_pb2_grpc as pb_grpc
from gateway.broker.managed import ManagedBroker

pytestmark = pytest.mark.integration

LEASE_S = 1.5
OWNER = "owner@example.com"
EARLY = [f"WP0ZZZ99ZJS8001{i:02d}" for i in range(3)]  # granted before the kill
LATE = [f"WP0ZZZ99ZJS8002{i:02d}" for i in range(3)]   # granted while the victim dies
SENTINEL_VIN = "WP0ZZZ99ZJS800999"
OFF, LOCKED = common_pb2.POWER_STATE_OFF, common_pb2.LOCK_STATE_LOCKED
UNPLUGGED = common_pb2.CHARGING_PLUG_DISCONNECTED


def env_for(broker: ManagedBroker, store_url: str) -> dict[str, str]:
    env = {
        "GATEWAY_MQTT_URL": broker_url(broker), "GATEWAY_FOD_IDLE_S": "1",
        # Only errors: the process's output goes to a pipe read when it ends.
        "GATEWAY_LOG_LEVEL": "ERROR",
    }
    if store_url:
        env.update({
            "GATEWAY_STORE_URL": store_url, "GATEWAY_MQTT_SHARED_GROUP": GROUP,
            "GATEWAY_MQTT_SLOTS": "2", "GATEWAY_MQTT_SLOT_LEASE_S": str(LEASE_S),
        })
    return env


async def started(directory: Path, env: dict[str, str]) -> RunningGateway:
    gw = RunningGateway(directory, env=env)
    await asyncio.to_thread(gw.wait_ready, 30)
    return gw


def metric(gw: RunningGateway, line_start: str) -> float:
    for line in gw.http("/metrics")[1].splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def order(vin: str, kind: str) -> pb.GrantRequest:
    if kind == "service":
        product, ekind = "remote-services", pb.ENTITLEMENT_KIND_SERVICE
    else:
        product, ekind = "sport-chrono", pb.ENTITLEMENT_KIND_FOD_UNLIMITED
    return pb.GrantRequest(order_id=f"{kind}-{vin}", vin=vin, product_id=product, kind=ekind,
                           purchaser=OWNER, purchaser_role=pb.PURCHASER_ROLE_OWNER)


async def grant_on(ports: list[int], vin: str) -> list[pb.Entitlement]:
    """The car's owner, service and FoD, on the first gateway that answers: a call the victim
    did not answer is retried on the next one with the same order id (idempotent)."""
    for port in ports:
        try:
            async with suite_channel(port) as ch:
                stub = pb_grpc.EntitlementServiceStub(ch)
                await stub.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=vin, owner=OWNER), timeout=10)
                return [await stub.Grant(order(vin, k), timeout=10) for k in ("service", "fod")]
        except grpc.aio.AioRpcError:
            continue
    raise AssertionError(f"no gateway granted {vin}")


@dataclass
class FleetCar:
    """A simulated car: boots off, locked and unplugged (R17 holds), acks every entitlement set,
    confirms every FoD command, and publishes charging records (QoS 1) while it runs."""

    vehicle: TestVehicle
    acked_sessions: list[str] = field(default_factory=list)
    downlinks: list[downlink_pb2.Downlink] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one publish at a time: in sequence order
    responder: asyncio.Task[None] | None = None

    async def boot(self) -> None:
        async with self.lock:
            await self.vehicle.close()
            await self.vehicle.connect(boot=True, with_will=False, listen=True,
                                       power=OFF, lock=LOCKED, plug=UNPLUGGED)
        if self.responder is not None:
            self.responder.cancel()
        self.responder = asyncio.create_task(self._respond())

    async def _respond(self) -> None:
        while True:
            down = await self.vehicle.downlinks.get()
            self.downlinks.append(down)
            env = self.vehicle.envelope
            async with self.lock:
                if down.HasField("entitlement_set"):
                    ack = env()
                    ack.entitlement_ack.set_version = down.entitlement_set.version
                    await self.vehicle.publish(ack)
                elif down.HasField("fod_command"):
                    result = env()
                    result.fod_result.command_id = down.fod_command.command_id
                    result.fod_result.entitlement_id = down.fod_command.entitlement_id
                    result.fod_result.action = down.fod_command.action
                    result.fod_result.success = True
                    await self.vehicle.publish(result)

    async def charging_record(self) -> None:
        async with self.lock:
            session_id = f"{self.vehicle.vin}-{self.vehicle.sequence + 1}"
            await self.vehicle.charging_session(session_id)
        self.acked_sessions.append(session_id)  # the broker acknowledged it (PUBACK)

    async def close(self) -> None:
        if self.responder is not None:
            self.responder.cancel()
        await self.vehicle.close()


@dataclass
class Watched:
    """What one Watch stream delivered: (cursor, event) in order."""

    events: list[tuple[int, bytes]] = field(default_factory=list)

    def __repr__(self) -> str:  # short in a failed `eventually`'s message
        return f"Watched({len(self.events)} events, last cursor {self.cursor})"

    @property
    def cursor(self) -> int:
        return self.events[-1][0] if self.events else 0


async def follow_vehicle_events(port: int, after: int, into: Watched) -> None:
    async with suite_channel(port) as ch:
        stream = vehicles_pb2_grpc.VehicleServiceStub(ch).WatchVehicleEvents(
            vehicles_pb2.WatchVehicleEventsRequest(after_cursor=after))
        async for ev in stream:
            into.events.append((ev.cursor, ev.SerializeToString()))


async def follow_entitlement_events(port: int, after: int, into: Watched) -> None:
    async with suite_channel(port) as ch:
        stream = pb_grpc.EntitlementServiceStub(ch).WatchEntitlementEvents(
            pb.WatchEntitlementEventsRequest(after_cursor=after))
        async for ev in stream:
            into.events.append((ev.cursor, ev.SerializeToString()))


async def until_broken(follow: Awaitable[None]) -> None:
    """A stream on the victim: it ends (with an error) when the process dies."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        await follow


def vehicle_events(w: Watched) -> list[vehicles_pb2.VehicleEvent]:
    return [vehicles_pb2.VehicleEvent.FromString(raw) for _, raw in w.events]


def entitlement_events(w: Watched) -> list[pb.EntitlementEvent]:
    return [pb.EntitlementEvent.FromString(raw) for _, raw in w.events]


async def read_through(
    follow: Callable[[int, int, Watched], Coroutine[Any, Any, None]], port: int, after: int,
    is_sentinel: Callable[[bytes], bool],
) -> Watched:
    """A stream from `after` on `port`, read until the sentinel event (included)."""
    got = Watched()
    task = asyncio.create_task(follow(port, after, got))
    try:
        await eventually(lambda: asyncio.sleep(0, got),
                         lambda w: any(is_sentinel(raw) for _, raw in w.events), timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task
    return got


@pytest.fixture
async def fleet(broker: ManagedBroker) -> AsyncIterator[dict[str, FleetCar]]:
    cars = {vin: FleetCar(TestVehicle(vin, broker.port, bearer=common_pb2.BEARER_EMBEDDED_SIM))
            for vin in EARLY + LATE}
    try:
        yield cars
    finally:
        for car in cars.values():
            await car.close()


async def late_grants(port: int, granted: list[str]) -> None:
    """The late cars' grants, one after another on the victim, until it stops answering."""
    for vin in LATE:
        try:
            await grant_on([port], vin)
        except AssertionError:
            return
        granted.append(vin)


async def full_vehicle_log(port: int, sentinel: TestVehicle) -> Watched:
    """Every vehicle event from cursor 0 up to now: the sentinel car changes its lock, and the
    log is read until that change (everything committed before it has a smaller cursor)."""
    lock = LOCKED if sentinel.sequence % 2 else common_pb2.LOCK_STATE_UNLOCKED  # a change each time
    await sentinel.state(lock=lock)
    return await read_through(follow_vehicle_events, port, 0, vehicle_sentinel(sentinel))


def vehicle_sentinel(sentinel: TestVehicle) -> Callable[[bytes], bool]:
    sequence = sentinel.sequence

    def matches(raw: bytes) -> bool:
        ev = vehicles_pb2.VehicleEvent.FromString(raw)
        return ev.vin == sentinel.vin and ev.vehicle.last_sequence == sequence
    return matches


def recorded_sessions(log: Watched) -> list[str]:
    return [e.charging_session.session.session_id for e in vehicle_events(log)
            if e.WhichOneof("kind") == "charging_session"]


async def models(port: int, vins: list[str]) -> list[str]:
    """The model each car's stored session has (empty: its Hello is not applied yet)."""
    async with suite_channel(port) as ch:
        stub = vehicles_pb2_grpc.VehicleServiceStub(ch)
        found = []
        for vin in vins:
            try:
                found.append((await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))).model)
            except grpc.aio.AioRpcError:  # NOT_FOUND: not seen yet
                found.append("")
        return found


async def test_a_gateway_killed_mid_run_loses_no_delivery_bill_uplink_or_stream_event(
    tmp_path: Path, broker: ManagedBroker, store_url: str, fleet: dict[str, FleetCar],
) -> None:
    """store_url: the conftest fixture, once per backend (empty: SQLite)."""
    env = env_for(broker, store_url)
    victim = await started(tmp_path / "victim", env)
    gateways = [victim]
    sentinel = TestVehicle(SENTINEL_VIN, broker.port)
    try:
        survivor: RunningGateway | None = None
        if store_url:  # a second gateway on the same database and shared subscription
            survivor = await started(tmp_path / "survivor", env)
            gateways.append(survivor)
            await eventually(
                lambda: asyncio.to_thread(
                    lambda: [metric(g, "gateway_ingest_slots_held ") for g in gateways]),
                lambda held: held == [1.0, 1.0], timeout=20,
            )

        # Both Watch streams, on the victim from the start.
        vehicle_stream, entitlement_stream = Watched(), Watched()
        watches = [
            asyncio.create_task(until_broken(follow(victim.grpc_port, 0, into)))
            for follow, into in ((follow_vehicle_events, vehicle_stream),
                                 (follow_entitlement_events, entitlement_stream))
        ]
        for vin in EARLY:
            await grant_on([victim.grpc_port], vin)
        for car in fleet.values():
            await car.boot()
        # The records start once each car's Hello is stored. Not yet handled (see README, Not
        # shared yet): a record that overtakes the Hello on the other gateway makes the Hello
        # a late arrival, whose model and state are then never applied, and R17 never holds.
        await eventually(lambda: models(victim.grpc_port, list(fleet)),
                         lambda found: set(found) == {"911"}, timeout=20)

        stop = asyncio.Event()

        async def traffic(car: FleetCar) -> None:
            while not stop.is_set():
                await car.charging_record()
                await asyncio.sleep(0.02)  # paces a car's records; proves nothing

        publishers = [asyncio.create_task(traffic(car)) for car in fleet.values()]

        # Mid-run: an early FoD was billed, others are being unlocked, the records flow; the
        # late grants start and the victim dies after the first of them.
        def billed() -> int:
            kinds = [e.kind for e in entitlement_events(entitlement_stream)]
            return kinds.count(pb.ENTITLEMENT_EVENT_KIND_BILLABLE)

        await eventually(lambda: asyncio.sleep(0, billed()), lambda n: n >= 1, timeout=30)
        granted_on_victim: list[str] = []
        granting = asyncio.create_task(late_grants(victim.grpc_port, granted_on_victim))
        await eventually(lambda: asyncio.sleep(0, len(granted_on_victim)), lambda n: n >= 1, timeout=20)
        victim.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait, 30)
        await granting
        await asyncio.gather(*watches)  # the victim's streams broke off
        killed_with_records = sum(len(car.acked_sessions) for car in fleet.values())
        assert vehicle_stream.events and entitlement_stream.events and killed_with_records

        if survivor is None:  # SQLite: the same gateway again, on its files
            survivor = await started(tmp_path / "victim", env)
            gateways.append(survivor)
        port = survivor.grpc_port
        # The late grants again (the same order ids: the ones the victim committed come back
        # as they are), then the late cars boot (R13: a service waits for a boot).
        ids = {vin: [e.entitlement_id for e in await grant_on([port], vin)] for vin in fleet}
        for vin in LATE:
            await fleet[vin].boot()

        async def states() -> dict[str, int]:
            async with suite_channel(port) as ch:
                stub = pb_grpc.EntitlementServiceStub(ch)
                return {
                    eid: int((await stub.GetEntitlement(pb.GetEntitlementRequest(entitlement_id=eid))).state)
                    for pair in ids.values() for eid in pair
                }

        # Every service delivered on its car's boot and acked; every FoD unlocked.
        wanted = {
            eid: state for service, fod in ids.values()
            for eid, state in ((service, pb.ENTITLEMENT_STATE_ACTIVE), (fod, pb.ENTITLEMENT_STATE_UNLOCKED))
        }
        await eventually(states, lambda got: got == wanted, timeout=40)
        for vin, (service, fod) in ids.items():  # the car itself got them
            got = fleet[vin].downlinks
            assert service in {i.entitlement_id for d in got if d.HasField("entitlement_set")
                               for i in d.entitlement_set.items}, vin
            assert fod in {d.fod_command.entitlement_id for d in got if d.HasField("fod_command")}, vin
        stop.set()
        await asyncio.gather(*publishers)
        for car in fleet.values():
            if car.responder is not None:
                car.responder.cancel()  # no more publishes: each car's last sequence is final

        # Every record the broker acknowledged is in the survivor's log (it may come last:
        # the dead slot's queue, or a batch the victim read and never acknowledged).
        acked = [sid for car in fleet.values() for sid in car.acked_sessions]
        await sentinel.connect(boot=False, with_will=False)
        full = await eventually(lambda: full_vehicle_log(port, sentinel),
                                lambda log: set(acked) <= set(recorded_sessions(log)), timeout=40)
        recorded = recorded_sessions(full)
        assert sorted(recorded) == sorted(acked)  # each once: nothing lost, nothing twice, nothing else

        # Both streams resumed on the survivor after their last cursor miss nothing.
        last = vehicle_events(full)[-1]
        resumed = await read_through(follow_vehicle_events, port, vehicle_stream.cursor,
                                     lambda raw: vehicles_pb2.VehicleEvent.FromString(raw) == last)
        assert vehicle_events(vehicle_stream) + vehicle_events(resumed) == vehicle_events(full)

        async with suite_channel(port) as ch:
            stub = pb_grpc.EntitlementServiceStub(ch)
            await stub.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=SENTINEL_VIN, owner=OWNER))
            mark = await stub.Grant(order(SENTINEL_VIN, "service"))

        def is_mark(raw: bytes) -> bool:
            return bool(pb.EntitlementEvent.FromString(raw).entitlement_id == mark.entitlement_id)

        everything = await read_through(follow_entitlement_events, port, 0, is_mark)
        resumed_e = await read_through(follow_entitlement_events, port, entitlement_stream.cursor, is_mark)
        before_kill = entitlement_events(entitlement_stream)
        assert before_kill + entitlement_events(resumed_e) == entitlement_events(everything)

        # R14: each FoD unlocked and billed exactly once, across the kill.
        kinds = [(e.entitlement_id, e.kind) for e in entitlement_events(everything)]
        for service, fod in ids.values():
            assert kinds.count((fod, pb.ENTITLEMENT_EVENT_KIND_BILLABLE)) == 1, kinds
            assert kinds.count((fod, pb.ENTITLEMENT_EVENT_KIND_UNLOCKED)) == 1, kinds
            assert kinds.count((service, pb.ENTITLEMENT_EVENT_KIND_ACTIVE)) == 1, kinds
            assert kinds.count((service, pb.ENTITLEMENT_EVENT_KIND_GRANTED)) == 1, kinds
        assert sum(k == pb.ENTITLEMENT_EVENT_KIND_BILLABLE for _, k in kinds) == len(fleet)

        # Each car's state is its last message's, despite redeliveries and late records.
        async with suite_channel(port) as ch:
            vstub = vehicles_pb2_grpc.VehicleServiceStub(ch)
            for car in fleet.values():
                found = await vstub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=car.vehicle.vin))
                assert found.last_sequence == car.vehicle.sequence, car.vehicle.vin
                state = (found.state.power, found.state.lock, found.state.charging_plug)
                assert state == (OFF, LOCKED, UNPLUGGED)
    finally:
        await sentinel.close()
        for g in gateways:
            if g.proc.poll() is None:
                g.stop(signal.SIGKILL)
