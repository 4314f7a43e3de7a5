"""The durable telemetry sink end to end: real nats-server (JetStream), real Mosquitto, real gRPC.

A backend that stops reading resumes from its cursor with every record; a stream outage holds
the cars' messages unacknowledged, so even a SIGKILL of the gateway meanwhile loses nothing;
two gateways feed one stream that one consumer reads whole.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import pytest
from nats_support import NatsServer, make_nats_server
from support import eventually, free_port, gateway_channel, gateway_config
from test_cli_run import RunningGateway
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, telemetry_pb2_grpc
from gateway.app import Gateway
from gateway.broker.managed import ManagedBroker
from gateway.egress.jetstream import CursorPruned, JetStreamSink, SinkUnavailable
from gateway.egress.record import OutRecord, out_record
from gateway.metrics import Metrics

pytestmark = pytest.mark.integration

STREAM = "TELEMETRY"  # the default telemetry_stream
SERVICE = "car-finder"
READ_TIMEOUT_S = 30.0  # generous: a loaded 2-core machine


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = make_nats_server(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def jetstream_config(tmp_path: Path, nats_url: str) -> dict[str, str]:
    return {"telemetry_sink": "jetstream", "nats_url": nats_url}


async def read_records(
    channel: grpc.aio.Channel, count: int, after_cursor: int = 0
) -> list[telemetry_pb2.TelemetryRecord]:
    """The next `count` records of SubscribeTelemetry after `after_cursor`, then the stream is
    cancelled (the backend goes away)."""
    stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
    call = stub.SubscribeTelemetry(telemetry_pb2.SubscribeTelemetryRequest(after_cursor=after_cursor))
    got: list[telemetry_pb2.TelemetryRecord] = []
    it = aiter(call)
    try:
        while len(got) < count:
            got.extend((await asyncio.wait_for(anext(it), READ_TIMEOUT_S)).records)
    finally:
        call.cancel()
    return got


async def stored(url: str) -> list[telemetry_pb2.TelemetryRecord]:
    """Every record the stream holds, read from JetStream directly (not through the gateway)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        return [
            telemetry_pb2.TelemetryRecord.FromString((await js.get_msg(STREAM, seq)).data or b"")
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ] if info.state.messages else []
    finally:
        await nc.close()


async def stream_count(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await (nc.jetstream()).stream_info(STREAM)).state.messages)
    finally:
        await nc.close()


async def test_a_consumer_away_resumes_from_its_cursor_with_every_record_in_order_per_car(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    gw = Gateway(gateway_config(tmp_path, free_port(), **jetstream_config(tmp_path, nats_server.url)))
    await gw.start()
    cars = [TestVehicle(f"WP0ZZZ99ZJS7000{i:02d}", gw.config.mqtt_port) for i in range(3)]
    # R22: one car in privacy mode; its locations must never reach the stream.
    cars[0].privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_ALL_SERVICES)
    try:
        for car in cars:
            await car.connect()
        async with gateway_channel(gw) as ch:
            for car in cars:
                for _ in range(20):
                    await car.telemetry(SERVICE)
            first = await read_records(ch, 60)
            last = first[-1].cursor
            # The backend is away while the cars send 300 more; counted in the stream, not timed.
            for _ in range(100):
                for car in cars:
                    await car.telemetry(SERVICE)
            await eventually(lambda: stream_count(nats_server.url), lambda n: n == 360, timeout=60)
            rest = await read_records(ch, 300, after_cursor=last)
    finally:
        for car in cars:
            await car.close()
        await gw.stop()

    assert len(first) == 60 and len(rest) == 300
    cursors = [r.cursor for r in first + rest]
    assert cursors == list(range(1, 361))  # every stream record once, in stream order
    for car in cars:
        # Hello is sequence 1: telemetry 2..121, none lost, in the car's order.
        assert [r.sequence for r in first + rest if r.vin == car.vin] == list(range(2, 122))
    private = [r for r in await stored(nats_server.url) if r.vin == cars[0].vin]
    assert len(private) == 120
    assert all(r.location_withheld and not r.sample.HasField("location") for r in private)
    public = [r for r in rest if r.vin == cars[1].vin]
    assert all(r.sample.HasField("location") for r in public)


def metric(gw: RunningGateway, line_start: str) -> float:
    for line in gw.http("/metrics")[1].splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_stream_outage_holds_the_acknowledgement_so_a_sigkill_meanwhile_loses_nothing(
    tmp_path: Path, broker: ManagedBroker, nats_server: NatsServer
) -> None:
    assert broker.credentials is not None
    url = f"mqtt://{broker.credentials.username}:{broker.credentials.password}@127.0.0.1:{broker.port}"
    env = {"GATEWAY_TELEMETRY_SINK": "jetstream", "GATEWAY_NATS_URL": nats_server.url}
    first = RunningGateway(tmp_path, "--mqtt-url", url, env=env)
    car = TestVehicle("WP0ZZZ99ZJS700100", broker.port)
    second: RunningGateway | None = None
    try:
        first.wait_ready()
        await car.connect()
        for _ in range(50):
            await car.telemetry(SERVICE)
        await eventually(lambda: stream_count(nats_server.url), lambda n: n == 50, timeout=30)

        nats_server.stop()
        for _ in range(50):  # the broker acknowledges each to the car; the gateway may not
            await car.telemetry(SERVICE)
        failures = 'gateway_telemetry_sink_failures_total{reason='
        await eventually(lambda: asyncio.to_thread(metric, first, failures), lambda n: n > 0, timeout=30)
        status, body = first.http("/readyz")
        assert status == 503 and "telemetry_sink unavailable" in body, body
        first.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.proc.wait, 30)

        nats_server.start()  # the same port and storage: the first 50 are still there
        second = RunningGateway(tmp_path, "--mqtt-url", url, env=env)
        await asyncio.to_thread(second.wait_ready, 30)
        await eventually(lambda: stream_count(nats_server.url), lambda n: n >= 100, timeout=60)
        # A sentinel after everything else: once it is stored, nothing earlier is still coming.
        await car.telemetry(SERVICE)
        records = await eventually(
            lambda: stored(nats_server.url), lambda rs: any(r.sequence == 102 for r in rs), timeout=30
        )
    finally:
        await car.close()
        first.stop()
        if second is not None:
            code, out = second.stop()
            assert code == 0, out
    # Hello is 1; 2..101 sent around the outage, 102 the sentinel: none lost, none stored twice.
    assert [r.sequence for r in records] == list(range(2, 103))


async def test_two_gateways_feed_one_stream_and_one_consumer_sees_the_fleet(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    gateways = [
        Gateway(gateway_config(tmp_path / name, free_port(), **jetstream_config(tmp_path, nats_server.url)))
        for name in ("a", "b")
    ]
    for gw in gateways:
        await gw.start()
    cars = [TestVehicle(f"WP0ZZZ99ZJS7002{i:02d}", gw.config.mqtt_port) for i, gw in enumerate(gateways)]
    try:
        for car in cars:
            await car.connect()
            for _ in range(10):
                await car.telemetry(SERVICE)
        async with gateway_channel(gateways[1]) as ch:
            got = await read_records(ch, 20)
    finally:
        for car in cars:
            await car.close()
        for gw in gateways:
            await gw.stop()
    assert sorted((r.vin, r.sequence) for r in got) == sorted(
        (car.vin, seq) for car in cars for seq in range(2, 12)
    )


def record(vin: str, sequence: int, speed_kmh: float = 50.0) -> OutRecord:
    rec = telemetry_pb2.TelemetryRecord(vin=vin, sequence=sequence, service=SERVICE)
    rec.sample.signals.add(name="speed_kmh", number=speed_kmh)
    return out_record(rec)


async def test_a_batch_sent_again_is_stored_once(nats_server: NatsServer) -> None:
    # A retried batch, or the broker's redelivery of one stored before a crash: the message ids
    # (VIN, envelope sequence, sample index) make the stream drop the repeat.
    sink = JetStreamSink(url=nats_server.url, stream=STREAM, subject_prefix="telemetry", metrics=Metrics())
    await sink.start()
    try:
        # Two samples of one envelope are two records, both kept.
        a, b = "WP0ZZZ99ZJS700300", "WP0ZZZ99ZJS700301"
        batch = [record(a, 7), record(a, 7), record(b, 7)]
        await sink.publish(batch)
        await sink.publish(batch)
        # A reset head unit (new sequence_epoch) sending sequence 7 again: other data, kept.
        await sink.publish([record(a, 7, speed_kmh=80.0)])
        await sink.publish([record(a, 8)])  # a sentinel after the repeat
    finally:
        await sink.close()
    assert [(r.vin, r.sequence) for r in await stored(nats_server.url)] == [
        (a, 7), (a, 7), (b, 7), (a, 7), (a, 8)
    ]


async def test_publish_waits_out_a_stream_outage_and_stores_the_batch_when_it_is_back(
    nats_server: NatsServer,
) -> None:
    metrics = Metrics()
    sink = JetStreamSink(url=nats_server.url, stream=STREAM, subject_prefix="telemetry", metrics=metrics,
                         ack_timeout_s=0.5)
    await sink.start()
    try:
        assert sink.ready
        nats_server.stop()
        publish = asyncio.create_task(sink.publish([record("WP0ZZZ99ZJS700400", 2)]))

        def failures() -> float:
            return sum(s.value for m in metrics.telemetry_sink_failures.collect() for s in m.samples
                       if s.name.endswith("_total"))

        await eventually(lambda: asyncio.sleep(0, failures()), lambda n: n > 0, timeout=30)
        assert not publish.done() and not sink.ready  # held: the pipeline would not acknowledge
        nats_server.start()
        await asyncio.wait_for(publish, 60)
        assert sink.ready
    finally:
        await sink.close()
    assert [(r.vin, r.sequence) for r in await stored(nats_server.url)] == [("WP0ZZZ99ZJS700400", 2)]


async def test_publishing_many_batches_leaves_no_task_or_subscription_behind(nats_server: NatsServer) -> None:
    sink = JetStreamSink(url=nats_server.url, stream=STREAM, subject_prefix="telemetry", metrics=Metrics())
    await sink.start()
    try:
        vin = "WP0ZZZ99ZJS700310"
        await sink.publish([record(vin, 1)])  # the reply subscription of the first publish
        tasks = len(asyncio.all_tasks())
        for seq in range(2, 52):
            await sink.publish([record(vin, seq)])
        assert len(asyncio.all_tasks()) == tasks  # was one more task per batch
    finally:
        await sink.close()
    assert await stream_count(nats_server.url) == 51


async def test_a_reader_whose_cursor_was_pruned_is_told_and_one_after_it_reads_on(
    nats_server: NatsServer,
) -> None:
    sink = JetStreamSink(url=nats_server.url, stream=STREAM, subject_prefix="telemetry", metrics=Metrics())
    await sink.start()
    try:
        vin = "WP0ZZZ99ZJS700311"
        await sink.publish([record(vin, seq) for seq in range(1, 6)])
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().purge_stream(STREAM, keep=2)  # retention: 1..3 are gone
        finally:
            await nc.close()
        with pytest.raises(CursorPruned) as pruned:
            async for _ in sink.records(1, frozenset()):
                pass
        assert (pruned.value.after, pruned.value.first) == (1, 4)
        reader = sink.records(3, frozenset())
        batch = await anext(reader)
        await reader.aclose()
        assert [(r.sequence, r.cursor) for r in batch.records] == [(4, 4), (5, 5)]
    finally:
        await sink.close()


async def test_a_server_that_does_not_answer_at_start_is_an_error_not_a_hang() -> None:
    sink = JetStreamSink(url=f"nats://u:secret@127.0.0.1:{free_port()}", stream=STREAM,
                         subject_prefix="telemetry", metrics=Metrics(), start_timeout_s=1.0)
    with pytest.raises(SinkUnavailable) as failed:
        await asyncio.wait_for(sink.start(), 30)  # the test's own bound: start gives up at 1 s
    assert "secret" not in str(failed.value)
