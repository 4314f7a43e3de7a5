"""The pipeline and its telemetry sink (gateway/egress/sink.py): records reach the sink after the
privacy rules, before the commit and the acknowledgement of the cars' messages."""

from __future__ import annotations

from collections.abc import Sequence

from test_pipeline import REFERENCE, VIN, FakeStore, Msg, hello, telemetry

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2
from gateway.clock import ManualClock
from gateway.egress.record import OutRecord
from gateway.egress.sink import TelemetrySink
from gateway.metrics import Metrics
from gateway.pipeline import Message, Pipeline
from gateway.session.hub import EventHub
from gateway.session.tracker import SessionTracker


class RecordingSink:
    """A durable sink that notes in the store's log when it has a batch."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.batches: list[list[telemetry_pb2.TelemetryRecord]] = []

    async def publish(self, records: Sequence[OutRecord]) -> int:
        self.log.append("sink")
        self.batches.append([telemetry_pb2.TelemetryRecord.FromString(r.data) for r in records])
        return 1


def make(store: FakeStore, sink: TelemetrySink) -> Pipeline:
    def ack(_batch: Sequence[Message]) -> None:
        store.log.append("ack")

    return Pipeline(
        tracker=SessionTracker(), store=store, hub=EventHub(), telemetry=sink,
        metrics=Metrics(), clock=ManualClock(), reference=REFERENCE, max_payload_bytes=4096,
        queue_messages=4, ack=ack, pause_reading=lambda: None, resume_reading=lambda: None,
    )


async def test_the_sink_has_the_records_before_their_commit_and_acknowledgement() -> None:
    store = FakeStore()
    sink = RecordingSink(store.log)
    p = make(store, sink)
    await p.process([hello()])
    store.log.clear()
    await p.process([telemetry(2, common_pb2.PRIVACY_MODE_OFF)])
    # Committed first, a crash in between would make the redelivered message a duplicate for
    # the replay window: its records would never reach a durable sink.
    assert store.log == ["sink", "commit", "ack"]
    assert [(r.vin, r.sequence) for r in sink.batches[0]] == [(VIN, 2)]


async def test_a_withheld_location_never_reaches_the_sink() -> None:
    # R22: privacy applies before the sink, whichever sink it is.
    store = FakeStore()
    sink = RecordingSink(store.log)
    p = make(store, sink)
    await p.process([hello(privacy=common_pb2.PRIVACY_MODE_ALL_SERVICES)])
    await p.process([telemetry(2, common_pb2.PRIVACY_MODE_ALL_SERVICES)])
    [[record]] = sink.batches
    assert not record.sample.HasField("location") and record.location_withheld


async def test_a_batch_without_telemetry_does_not_call_the_sink() -> None:
    store = FakeStore()
    sink = RecordingSink(store.log)
    await make(store, sink).process([hello(), Msg(f"v1/vehicles/{VIN}/up", b"\xff")])
    assert sink.batches == [] and "ack" in store.log
