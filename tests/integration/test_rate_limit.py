"""Acceptance: one car over its per-car limit loses its excess, counted as `rate_limited`, while
another car publishing at the same time is served in full (real Mosquitto, real gRPC).

The gateway's clock is a ManualClock that does not move, so no token is refilled during the
test: exactly `BURST` messages of the flooding car pass, and the rest is the counted excess.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import eventually, free_port, gateway_channel, gateway_config, rejected, telemetry_subscribed
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, telemetry_pb2_grpc
from gateway.app import Gateway
from gateway.broker.managed import ManagedBroker
from gateway.clock import ManualClock
from gateway.config import load_config

pytestmark = pytest.mark.integration

FLOODER = "WP0ZZZ99ZJS710001"
QUIET = "WP0ZZZ99ZJS710002"
BURST = 20
GOOD_FLOOD = 60  # telemetry envelopes after the flooder's Hello
BAD_FLOOD = 15  # and garbage payloads: a flood of bad input uses the same tokens
QUIET_MESSAGES = 10


@pytest.fixture
async def limited_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    clock = ManualClock(start=time.time())  # never advanced: no refill during the test
    config = gateway_config(tmp_path, free_port(), car_rate_per_s=1.0, car_burst=BURST)  # a low limit
    gw = Gateway(config, clock=clock)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def test_a_car_over_its_limit_loses_the_excess_counted_and_another_car_is_served_in_full(
    limited_gateway: Gateway,
) -> None:
    gw = limited_gateway
    async with gateway_channel(gw) as channel:
        before = list(gw.fanout.subscribers)
        stream = telemetry_pb2_grpc.TelemetryServiceStub(channel).SubscribeTelemetry(
            telemetry_pb2.SubscribeTelemetryRequest()
        )
        first = asyncio.ensure_future(stream.read())  # starts the call
        await telemetry_subscribed(gw, before)

        port = gw.config.mqtt_port
        flooder = TestVehicle(FLOODER, port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
        quiet = TestVehicle(QUIET, port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
        await flooder.connect()  # its Hello is the first of its BURST tokens
        await quiet.connect()

        async def flood() -> None:
            for i in range(GOOD_FLOOD + BAD_FLOOD):
                if i % 5 == 4 and i // 5 < BAD_FLOOD:
                    await flooder.publish(b"\xff\xffnot an envelope")
                else:
                    await flooder.telemetry("car-finder")

        async def publish_quietly() -> None:
            for _ in range(QUIET_MESSAGES):
                await quiet.telemetry("car-finder")

        await asyncio.gather(flood(), publish_quietly())  # the quiet car publishes during the flood
        # The sentinel: published after every flood message was acknowledged by the broker, so
        # the gateway has processed the whole flood when the sentinel's record arrives.
        await quiet.telemetry("car-finder")
        sentinel = quiet.sequence

        got: dict[str, list[int]] = {FLOODER: [], QUIET: []}
        batch = await asyncio.wait_for(first, 10)
        while True:
            assert isinstance(batch, telemetry_pb2.TelemetryRecords)
            for r in batch.records:
                got[r.vin].append(r.sequence)
            if sentinel in got[QUIET]:
                break
            batch = await asyncio.wait_for(stream.read(), 10)
        stream.cancel()

    # The quiet car: every message (Hello = sequence 1, telemetry from 2), nothing lost or slowed out.
    assert got[QUIET] == list(range(2, sentinel + 1))
    # The flooder: its burst, the Hello included, passed in order (the first garbage payload is
    # within it, the rest beyond); everything after was dropped and counted.
    passed_telemetry = got[FLOODER]
    within = BURST - 1  # after the Hello
    bad_within = sum(1 for i in range(within) if i % 5 == 4 and i // 5 < BAD_FLOOD)
    assert len(passed_telemetry) == within - bad_within
    assert passed_telemetry == sorted(passed_telemetry)
    # The counters move after the batch's records went out: waited for, then exact.
    excess = 1 + GOOD_FLOOD + BAD_FLOOD - BURST
    assert await eventually(lambda: rejected(gw, "rate_limited"), lambda n: n >= excess) == excess
    assert await rejected(gw, "malformed_protobuf") == bad_within
    assert await rejected(gw, "hello_rate_limited") == 0
    await flooder.close()
    await quiet.close()


async def test_a_backlog_queued_by_the_broker_while_the_gateway_was_down_is_delivered_in_full(
    tmp_path: Path, broker: ManagedBroker,
) -> None:
    """R28 without loss: a car kept sending (within its rate) while the gateway was down; when
    the gateway resumes its persistent session the broker delivers the backlog at once, many
    times the car's burst. It is a backlog, not a flood: nothing of it is dropped."""
    creds = broker.credentials
    assert creds is not None
    clock = ManualClock(start=time.time())  # never advanced: no refill, so only catch-up helps
    config = load_config(
        None, env={}, data_dir=str(tmp_path / "data"),
        mqtt_url=f"mqtt://{creds.username}:{creds.password}@127.0.0.1:{broker.port}",
        grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0", car_rate_per_s=1.0, car_burst=BURST,
    )
    car = TestVehicle(QUIET, broker.port, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    first = Gateway(config, clock=clock)
    await first.start()
    try:
        await car.connect()
        await eventually(lambda: asyncio.sleep(0, first.tracker.get(QUIET)), lambda s: s is not None)
    finally:
        await first.stop()  # a clean stop: the broker keeps the gateway's session and queues for it
    backlog = 3 * BURST
    for _ in range(backlog):
        await car.telemetry("remote-services")  # QoS 1: the broker has each before this returns
    second = Gateway(config, clock=clock)
    await second.start()
    try:
        received = await eventually(
            lambda: asyncio.sleep(0, second.metrics.registry.get_sample_value(
                "gateway_messages_received_total", {"kind": "telemetry"})),
            lambda n: n is not None and n >= backlog,
        )
        assert received == backlog
        assert await rejected(second, "rate_limited") == 0
    finally:
        await car.close()
        await second.stop()
