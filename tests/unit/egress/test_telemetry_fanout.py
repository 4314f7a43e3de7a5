import asyncio

from gateway._gen.telematics.v1 import telemetry_pb2
from gateway.egress.telemetry import MAX_RECORDS_PER_MESSAGE, TelemetryFanout


async def test_large_batches_are_split_into_bounded_grpc_messages() -> None:
    fanout = TelemetryFanout(queue_size=100)
    sub = fanout.subscribe(frozenset())
    n = MAX_RECORDS_PER_MESSAGE * 2 + 5
    await fanout.publish([telemetry_pb2.TelemetryRecord(vin="V", sequence=i) for i in range(n)])
    sizes = [len(sub.queue.get_nowait().records) for _ in range(sub.queue.qsize())]
    assert sizes == [MAX_RECORDS_PER_MESSAGE, MAX_RECORDS_PER_MESSAGE, 5]


async def test_a_subscriber_gets_only_the_services_it_asked_for() -> None:
    fanout = TelemetryFanout(queue_size=10)
    sub = fanout.subscribe(frozenset({"charging"}))
    await fanout.publish([telemetry_pb2.TelemetryRecord(service="charging"),
                          telemetry_pb2.TelemetryRecord(service="car-finder")])
    assert [r.service for r in sub.queue.get_nowait().records] == ["charging"]


async def test_a_full_subscriber_makes_publish_wait_instead_of_dropping() -> None:
    fanout = TelemetryFanout(queue_size=1)
    sub = fanout.subscribe(frozenset())
    await fanout.publish([telemetry_pb2.TelemetryRecord(sequence=1)])
    second = asyncio.create_task(fanout.publish([telemetry_pb2.TelemetryRecord(sequence=2)]))
    await asyncio.sleep(0.01)
    assert not second.done()  # backpressure
    first = await sub.get()
    await asyncio.wait_for(second, 1)
    later = await sub.get()
    assert first is not None and later is not None
    assert [first.records[0].sequence, later.records[0].sequence] == [1, 2]


async def test_close_ends_a_stream_after_what_was_queued_even_when_full() -> None:
    fanout = TelemetryFanout(queue_size=1)
    sub = fanout.subscribe(frozenset())
    await fanout.publish([telemetry_pb2.TelemetryRecord(sequence=1)])
    fanout.close()
    assert (await sub.get()) is not None
    assert (await sub.get()) is None
