import asyncio

from gateway._gen.telematics.v1 import telemetry_pb2
from gateway.egress.telemetry import MAX_RECORDS_PER_MESSAGE, TelemetryFanout, TelemetrySubscriber


def next_batch(sub: TelemetrySubscriber) -> telemetry_pb2.TelemetryRecords:
    batch = sub.queue.get_nowait()
    assert batch is not None, "the stream ended (close()) where a batch was expected"
    return batch


async def test_large_batches_are_split_into_bounded_grpc_messages() -> None:
    fanout = TelemetryFanout(queue_size=100)
    sub = fanout.subscribe(frozenset())
    n = MAX_RECORDS_PER_MESSAGE * 2 + 5
    await fanout.publish([telemetry_pb2.TelemetryRecord(vin="V", sequence=i) for i in range(n)])
    sizes = [len(next_batch(sub).records) for _ in range(sub.queue.qsize())]
    assert sizes == [MAX_RECORDS_PER_MESSAGE, MAX_RECORDS_PER_MESSAGE, 5]


async def test_a_subscriber_gets_only_the_services_it_asked_for() -> None:
    fanout = TelemetryFanout(queue_size=10)
    sub = fanout.subscribe(frozenset({"charging"}))
    await fanout.publish([telemetry_pb2.TelemetryRecord(service="charging"),
                          telemetry_pb2.TelemetryRecord(service="car-finder")])
    assert [r.service for r in next_batch(sub).records] == ["charging"]


async def test_a_full_subscriber_makes_publish_wait_instead_of_dropping() -> None:
    fanout = TelemetryFanout(queue_size=1)
    sub = fanout.subscribe(frozenset())
    await fanout.publish([telemetry_pb2.TelemetryRecord(sequence=1)])
    second = asyncio.create_task(fanout.publish([telemetry_pb2.TelemetryRecord(sequence=2)]))
    # One turn of the loop runs publish() up to its first await, the slot it cannot get: no timer
    # is involved, so "not done" here is a fact about the code, not about the machine's speed.
    await asyncio.sleep(0)
    assert not second.done()  # backpressure
    assert sub.queue.qsize() == 1
    first = await sub.get()  # the consumer takes one batch: the waiting publish goes on
    await asyncio.wait_for(second, timeout=5)
    assert first is not None and [r.sequence for r in first.records] == [1]
    assert [r.sequence for r in next_batch(sub).records] == [2]  # nothing was dropped
