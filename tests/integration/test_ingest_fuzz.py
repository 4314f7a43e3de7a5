"""A fuzz run of the whole ingest path: random and mutated payloads on real MQTT topics
(real Mosquitto with the project's ACL, the in-process gateway, real gRPC), interleaved with
valid traffic from other cars. Afterwards: nothing crashed or hung (GetVehicle and /readyz
answer), every message is counted exactly once, and every good car's data arrived.

The payloads come from a seeded random generator (SEED): a failure is reproducible as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable

import aiohttp
import aiomqtt
import grpc
import pytest
from support import eventually, telemetry_subscribed
from vehicle_client import TestVehicle

from gateway import topics
from gateway._gen.telematics.v1 import (
    common_pb2,
    telemetry_pb2,
    telemetry_pb2_grpc,
    uplink_pb2,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway

pytestmark = pytest.mark.integration

SEED = 20_261_128
HOSTILE_MESSAGES = 360
HOSTILE = ["WP0ZZZ99ZTS392124", "WP0ZZZ99ZTS392125", "WP0ZZZ99ZTS392126"]
GOOD = ["WP0ZZZ99ZJS700001", "WP0ZZZ99ZJS700002"]
BAD_SYNTAX = "wp0zzz99zjs700003"  # lower case: not a VIN; the ACL still lets it use its own topics
SERVICE = "car-finder"


def valid_payload(car: TestVehicle, rng: random.Random) -> uplink_pb2.Envelope:
    """A valid envelope of a random body kind from this car (the seed of a mutation)."""
    env = car.envelope()
    kind = rng.choice(["telemetry", "state", "heartbeat", "charging", "ack", "goodbye", "result"])
    if kind == "telemetry":
        env.telemetry.service = SERVICE
        for _ in range(rng.randint(1, 4)):
            s = env.telemetry.samples.add()
            s.sampled_at.FromNanoseconds(time.time_ns())
            s.location.latitude, s.location.longitude = rng.uniform(-90, 90), rng.uniform(-180, 180)
            s.signals.add(name="speed_kmh", number=rng.uniform(0, 250))
    elif kind == "state":
        env.state_change.state.lock = common_pb2.LOCK_STATE_LOCKED
    elif kind == "heartbeat":
        env.heartbeat.SetInParent()
    elif kind == "charging":
        cs = env.charging_session
        cs.session_id, cs.energy_kwh, cs.currency = f"s-{env.sequence}", 12.5, "EUR"
        cs.started_at.seconds = int(time.time()) - 3600
        cs.ended_at.seconds = cs.started_at.seconds + 600
    elif kind == "ack":
        env.entitlement_ack.entitlement_ids.extend(["e-1", "e-2"])
    elif kind == "goodbye":
        env.goodbye.reason = "ignition off"
    else:
        env.command_result.command_id = "c-1"
    return env


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1..4 mutations: bit flips, truncation, a duplicated or dropped slice, random insertions."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            b.extend(rng.randbytes(rng.randint(1, 8)))
            continue
        i = rng.randrange(len(b))
        op = rng.randrange(5)
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            del b[i:]
        elif op == 2:
            j = min(len(b), i + rng.randint(1, 32))
            b[j:j] = b[i:j]  # a slice duplicated (a field twice, or a broken length)
        elif op == 3:
            del b[i:i + rng.randint(1, 8)]
        else:
            b[i:i] = rng.randbytes(rng.randint(1, 8))
    return bytes(b)


def hostile_payload(car: TestVehicle, rng: random.Random) -> tuple[str, bytes]:
    roll = rng.random()
    if roll < 0.25:
        return topics.uplink(car.vin), rng.randbytes(rng.randint(0, 400))
    if roll < 0.85:
        return topics.uplink(car.vin), mutate(valid_payload(car, rng).SerializeToString(), rng)
    if roll < 0.95:
        will = uplink_pb2.LastWill(vin=car.vin, connection_id=car.connection_id)
        return topics.will(car.vin), mutate(will.SerializeToString(), rng)
    return topics.will(car.vin), rng.randbytes(rng.randint(0, 40))


async def counted(gw: Gateway) -> int:
    """Messages the gateway has accounted for, each exactly once: served (received), refused
    (rejected) or dropped as stale. Late and other-epoch arrivals deliver their data, so they
    are in `received` already and also in stale{late, other_epoch}: not added twice."""
    total = 0.0
    for metric in gw.metrics.registry.collect():
        for s in metric.samples:
            if s.name in ("gateway_messages_received_total", "gateway_messages_rejected_total") or (
                s.name == "gateway_messages_stale_total" and s.labels["outcome"] in ("duplicate", "too_old")
            ):
                total += s.value
    return int(total)


async def test_random_and_mutated_payloads_on_real_topics_are_all_counted_and_other_cars_are_served(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    rng = random.Random(SEED)
    port = gateway.config.mqtt_port
    vehicles = vehicles_pb2_grpc.VehicleServiceStub(channel)
    before = list(gateway.fanout.subscribers)
    stream = telemetry_pb2_grpc.TelemetryServiceStub(channel).SubscribeTelemetry(
        telemetry_pb2.SubscribeTelemetryRequest(services=[SERVICE])
    )
    got: set[tuple[str, int]] = set()

    async def collect() -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for batch in stream:
                got.update((r.vin, r.sequence) for r in batch.records if r.vin in GOOD)

    reader = asyncio.create_task(collect())
    await telemetry_subscribed(gateway, before)

    hostile = [TestVehicle(vin, port) for vin in HOSTILE]
    good = [TestVehicle(vin, port) for vin in GOOD]
    expected: set[tuple[str, int]] = set()
    sent = 0
    try:
        for car in [*hostile, *good]:
            await car.connect()
            sent += 1  # its Hello
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=BAD_SYNTAX, protocol=aiomqtt.ProtocolVersion.V5
        ) as bad_syntax:
            for i in range(HOSTILE_MESSAGES):
                car = rng.choice(hostile)
                topic, payload = hostile_payload(car, rng)
                await car.publish(payload, topic=topic)
                sent += 1
                if i % 40 == 0:  # a client whose id is no VIN, on its own (ACL-allowed) topic
                    await bad_syntax.publish(topics.uplink(BAD_SYNTAX), rng.randbytes(20), qos=1)
                    sent += 1
                if i % 12 == 0:
                    for g in good:
                        await g.telemetry(SERVICE)
                        expected.add((g.vin, g.sequence))
                        sent += 1
        # The sentinels: each good car's next envelope, then the gateway must have every message.
        for g in good:
            await g.heartbeat()
            sent += 1
        for g in good:
            v = await caught_up(vehicles, g)
            assert v.presence == vehicles_pb2.PRESENCE_ONLINE
        n = await eventually(lambda: counted(gateway), lambda n: n >= sent)
        assert n == sent, f"{n} messages counted, {sent} sent"
        await eventually(_value(got), lambda g: expected <= g)
        assert gateway.pipeline is not None and all(not t.done() for t in gateway._tasks)
        url = f"http://127.0.0.1:{gateway.http_port}/readyz"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 200
        rejected = gateway.metrics.registry.get_sample_value(
            "gateway_messages_rejected_total", {"reason": "malformed_protobuf"}
        )
        assert rejected is not None and rejected > 0  # the fuzz did reach the parser
    finally:
        stream.cancel()
        reader.cancel()
        for car in [*hostile, *good]:
            await car.close()


async def caught_up(vehicles: vehicles_pb2_grpc.VehicleServiceStub, car: TestVehicle) -> vehicles_pb2.Vehicle:
    """The car's latest envelope is applied (GetVehicle shows its sequence)."""

    async def probe() -> vehicles_pb2.Vehicle:
        v: vehicles_pb2.Vehicle = await vehicles.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=car.vin))
        return v

    return await eventually(probe, lambda v: v.last_sequence == car.sequence)


def _value(got: set[tuple[str, int]]) -> Callable[[], Awaitable[set[tuple[str, int]]]]:
    async def probe() -> set[tuple[str, int]]:
        return set(got)

    return probe
