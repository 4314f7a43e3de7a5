"""Overload: a car offers QoS 1 telemetry faster than the gateway passes it on (here: its only
SubscribeTelemetry client does not read). The gateway's queue stays bounded, it stops reading
from the broker (which keeps the backlog), the overload shows in /metrics, and once the client
reads, every message the broker acknowledged to the car arrives (README "Backpressure").
Real Mosquitto, real gateway, real gRPC.

Nothing here waits for something not to happen: the test waits for the pause to show, checks
the queue's bound at that point and after the broker acknowledged every message, and ends on
the car's last message (the sentinel) arriving at the client.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from support import admin_token, eventually, free_port, gateway_config, scraped
from vehicle_client import TestVehicle

from gateway import topics
from gateway._gen.telematics.v1 import telemetry_pb2, telemetry_pb2_grpc
from gateway.api.client import aio_channel
from gateway.app import Gateway
from gateway.pipeline import MAX_BATCH
from load import frames

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS740001"
QUEUE = 100  # ingress_queue_messages: tiny, so that the bound is visible against the load
MESSAGES = 20_000
# One socket read hands the gateway at most this many bytes (asyncio and uvloop read up to
# 256 KiB); the read that reaches the limit is queued whole, then reading stops.
MAX_READ = 256 * 1024
STALLED_CLIENT = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 4096))


class QosOneCar:
    """A raw MQTT 5 connection publishing QoS 1 as fast as the socket takes it; remembers the
    sequence of every message whose PUBACK (success) came back from the broker."""

    def __init__(self, vin: str) -> None:
        self.car = TestVehicle(vin, 0)  # only builds envelopes (sequences from 1)
        self.topic = topics.uplink(vin)
        self._reader = frames.FrameReader()
        self._pending: dict[int, int] = {}  # packet id -> sequence
        self.acked: list[int] = []

    async def connect(self, port: int) -> None:
        self.r, self.w = await asyncio.open_connection("127.0.0.1", port)
        self.w.write(frames.connect(self.car.vin, keepalive=60))
        (connack,) = await self._packets(1)
        assert connack.kind == frames.CONNACK and connack.reason_code == 0, connack
        env = self.car.envelope()
        env.hello.connection_id = 1
        env.hello.boot = True
        await self.publish([env.SerializeToString()], [env.sequence])

    def telemetry(self) -> tuple[bytes, int]:
        env = self.car.envelope()
        env.telemetry.service = "car-finder"
        sample = env.telemetry.samples.add()
        sample.sampled_at.FromNanoseconds(time.time_ns())
        sample.signals.add(name="speed_kmh", number=50.0)
        return env.SerializeToString(), env.sequence

    async def publish(self, payloads: list[bytes], sequences: list[int]) -> None:
        """Publish at most 65,535 messages at once, then read their PUBACKs."""
        for pid, (payload, seq) in enumerate(zip(payloads, sequences, strict=True), start=1):
            frame = frames.publish(self.topic, payload, qos=1, packet_id=pid)
            self._pending[pid] = seq
            self.w.write(frame)
        await self.w.drain()
        for ack in await self._packets(len(payloads)):
            assert ack.kind == frames.PUBACK and ack.reason_code == 0, ack
            self.acked.append(self._pending.pop(ack.packet_id))

    async def _packets(self, n: int) -> list[frames.Packet]:
        got: list[frames.Packet] = []
        while len(got) < n:
            data = await asyncio.wait_for(self.r.read(65536), 30)
            assert data, "the broker closed the connection"
            got += self._reader.feed(data)
        return got

    async def close(self) -> None:
        self.w.close()
        await self.w.wait_closed()


@pytest.mark.timeout(120)
async def test_overload_pauses_reading_bounds_the_queue_and_loses_no_qos1_message(tmp_path: Path) -> None:
    config = gateway_config(
        tmp_path, free_port(), ingress_queue_messages=QUEUE, telemetry_subscriber_queue=1,
        # The car may send as fast as it likes: this is about the gateway's capacity, not a
        # car over its limits (those have their own tests).
        car_rate_per_s=1_000_000, car_burst=10_000_000, car_quarantine_excess=0,
    )
    gw = Gateway(config)
    await gw.start()
    car = QosOneCar(VIN)
    try:
        # A backend that does not read: without these the client's gRPC library would buffer
        # megabytes for it (its flow-control window grows with BDP probing).
        async with aio_channel(f"127.0.0.1:{gw.grpc_port}", admin_token(gw.config.data_dir),
                               options=STALLED_CLIENT) as channel:
            call = telemetry_pb2_grpc.TelemetryServiceStub(channel).SubscribeTelemetry(
                telemetry_pb2.SubscribeTelemetryRequest()
            )
            # One read starts the call; the client then reads nothing until told (a stuck backend).
            first: asyncio.Future[object] = asyncio.ensure_future(call.read())
            await eventually(lambda: asyncio.sleep(0, len(gw.fanout.subscribers)), lambda n: n == 1)
            await car.connect(gw.config.mqtt_port)
            assert await scraped(gw, "gateway_ingress_paused") == 0
            envelopes = [car.telemetry() for _ in range(MESSAGES)]
            sentinel = envelopes[-1][1]
            payloads, sequences = [p for p, _ in envelopes], [s for _, s in envelopes]
            publishing: asyncio.Task[None] = asyncio.create_task(car.publish(payloads, sequences))

            await eventually(lambda: scraped(gw, "gateway_ingress_paused"), lambda v: v == 1)
            await publishing  # the broker acknowledged every message to the car
            # Read and not processed: the queue up to QUEUE and the read that reached it, and the
            # batch waiting for the client (up to MAX_BATCH and the read that completed it).
            per_read = MAX_READ // min(len(p) for p, _ in envelopes)
            bound = QUEUE + MAX_BATCH + 2 * per_read
            assert len(car.acked) == MESSAGES + 1  # the Hello and the telemetry
            # Reading is still paused after the broker took everything: the backlog is the
            # broker's, the gateway's queue is at its bound.
            assert await scraped(gw, "gateway_ingress_paused") == 1
            held = await scraped(gw, "gateway_ingress_queued_messages")
            assert 0 < held <= bound < MESSAGES, (held, bound)
            assert gw.pipeline is not None and gw.pipeline.processed < MESSAGES  # the rest is at the broker
            assert await scraped(gw, "gateway_ingress_backpressure_total") >= 1

            # The backend reads again: every acknowledged message arrives, the last one too.
            received: set[int] = set()
            duplicates = 0
            batch = await asyncio.wait_for(first, 30)
            while True:
                assert isinstance(batch, telemetry_pb2.TelemetryRecords)
                for r in batch.records:
                    assert r.vin == VIN
                    duplicates += r.sequence in received
                    received.add(r.sequence)
                if sentinel in received:
                    break
                batch = await asyncio.wait_for(call.read(), 30)
            call.cancel()
        telemetry_acked = set(car.acked) - {1}  # sequence 1 is the Hello: no telemetry record
        assert telemetry_acked - received == set()
        assert duplicates == 0  # no redelivery happened: the gateway was connected throughout
        await eventually(lambda: scraped(gw, "gateway_ingress_paused"), lambda v: v == 0)
        assert await scraped(gw, "gateway_ingress_paused_seconds_total") > 0
        assert await scraped(gw, "gateway_ingress_queued_messages") == 0
    finally:
        await car.close()
        await gw.stop()
