import asyncio

from gateway._gen.telematics.v1 import telemetry_pb2
from gateway.egress.record import OutRecord, out_record
from gateway.egress.telemetry import MAX_RECORDS_PER_MESSAGE, TelemetryFanout, TelemetrySubscriber


def next_batch(sub: TelemetrySubscriber) -> telemetry_pb2.TelemetryRecords:
    batch = sub.queue.get_nowait()
    assert batch is not None, "the stream ended (close()) where a batch was expected"
    return telemetry_pb2.TelemetryRecords.FromString(batch)


async def test_large_batches_are_split_into_bounded_grpc_messages() -> None:
    fanout = TelemetryFanout(queue_size=100)
    sub = fanout.subscribe(frozenset())
    n = MAX_RECORDS_PER_MESSAGE * 2 + 5
    await fanout.publish([out_record(telemetry_pb2.TelemetryRecord(vin="V", sequence=i)) for i in range(n)])
    sizes = [len(next_batch(sub).records) for _ in range(sub.queue.qsize())]
    assert sizes == [MAX_RECORDS_PER_MESSAGE, MAX_RECORDS_PER_MESSAGE, 5]


async def test_a_subscriber_gets_only_the_services_it_asked_for() -> None:
    fanout = TelemetryFanout(queue_size=10)
    sub = fanout.subscribe(frozenset({"charging"}))
    await fanout.publish([out_record(telemetry_pb2.TelemetryRecord(service="charging")),
                          out_record(telemetry_pb2.TelemetryRecord(service="car-finder"))])
    assert [r.service for r in next_batch(sub).records] == ["charging"]


async def test_a_full_subscriber_makes_publish_wait_instead_of_dropping() -> None:
    fanout = TelemetryFanout(queue_size=1)
    sub = fanout.subscribe(frozenset())
    await fanout.publish([out_record(telemetry_pb2.TelemetryRecord(sequence=1))])
    second = asyncio.create_task(fanout.publish([out_record(telemetry_pb2.TelemetryRecord(sequence=2))]))
    # One turn of the loop runs publish() up to its first await, the slot it cannot get: no timer
    # is involved, so "not done" here is a fact about the code, not about the machine's speed.
    await asyncio.sleep(0)
    assert not second.done()  # backpressure
    assert sub.queue.qsize() == 1
    first = await sub.get()  # the consumer takes one batch: the waiting publish goes on
    await asyncio.wait_for(second, timeout=5)
    assert first is not None
    assert [r.sequence for r in telemetry_pb2.TelemetryRecords.FromString(first).records] == [1]
    assert [r.sequence for r in next_batch(sub).records] == [2]  # nothing was dropped


def message(seq: int, service: str = "charging") -> telemetry_pb2.TelemetryRecord:
    rec = telemetry_pb2.TelemetryRecord(vin="WP0ZZZ99ZJS700001", sequence=seq, service=service)
    rec.sent_at.seconds = 1_764_000_000 + seq
    rec.sample.location.latitude = 48.8
    rec.sample.signals.add(name="soc_pct", number=50.0 + seq)
    return rec


def record(seq: int, service: str = "charging") -> OutRecord:
    return out_record(message(seq, service))


async def test_a_queued_batch_is_the_same_bytes_as_the_message_serialized_whole() -> None:
    fanout = TelemetryFanout(queue_size=10)
    sub = fanout.subscribe(frozenset())
    # Sizes around the varint boundaries of the framing (127/128 bytes, 16 383/16 384 bytes).
    records = [message(i) for i in range(3)]
    records.append(telemetry_pb2.TelemetryRecord(vin="V" * 100, service="x"))
    records.append(telemetry_pb2.TelemetryRecord(vin="V" * 20_000, service="x"))
    records.append(telemetry_pb2.TelemetryRecord())  # an empty record: zero-length element
    await fanout.publish([out_record(r) for r in records])
    assert sub.queue.get_nowait() == telemetry_pb2.TelemetryRecords(records=records).SerializeToString()


async def test_subscribers_with_the_same_filter_share_one_serialized_batch() -> None:
    fanout = TelemetryFanout(queue_size=10)
    every = [fanout.subscribe(frozenset()) for _ in range(2)]
    charging = [fanout.subscribe(frozenset({"charging"})) for _ in range(2)]
    got = await fanout.publish([record(1, "charging"), record(2, "car-finder")])
    assert got == 4
    first, second = (sub.queue.get_nowait() for sub in every)
    assert first is second  # built once, not per subscriber
    only_a, only_b = (sub.queue.get_nowait() for sub in charging)
    assert only_a is only_b
    assert only_a is not None
    assert [r.sequence for r in telemetry_pb2.TelemetryRecords.FromString(only_a).records] == [1]


async def test_a_publish_waiting_on_a_full_subscriber_goes_on_when_that_client_leaves() -> None:
    fanout = TelemetryFanout(queue_size=1)
    leaving = fanout.subscribe(frozenset())
    staying = fanout.subscribe(frozenset())
    record = out_record(
        telemetry_pb2.TelemetryRecord(vin="WP0ZZZ99ZJS300011", sequence=1, service="car-finder")
    )
    await fanout.publish([record])  # both queues full now
    assert await staying.get() is not None  # the staying client reads; the leaving one never does
    blocked = asyncio.create_task(fanout.publish([record]))
    await asyncio.sleep(0)
    assert not blocked.done()  # backpressure: waits for the leaving client's room
    fanout.unsubscribe(leaving)  # its stream ended (the client went away)
    assert await asyncio.wait_for(blocked, 5) == 2
    got = await staying.get()  # the staying client got it
    assert got is not None and telemetry_pb2.TelemetryRecords.FromString(got).records[0].sequence == 1
    await fanout.publish([record])  # and later batches do not wait for the gone client
    assert leaving.queue.qsize() == 1  # only what was queued before it left
