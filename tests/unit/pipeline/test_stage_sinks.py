"""The sinks stage alone (gateway/pipeline/sinks.py): records handed to a TelemetrySink and
counted by whether anyone took them."""

from __future__ import annotations

from collections.abc import Sequence

from gateway._gen.telematics.v1 import telemetry_pb2
from gateway.egress.record import OutRecord, out_record
from gateway.egress.sink import TelemetrySink
from gateway.metrics import Metrics
from gateway.pipeline.sinks import SinkStage


class CountingSink:
    def __init__(self, takers: int) -> None:
        self.takers = takers
        self.published: list[int] = []

    async def publish(self, records: Sequence[OutRecord]) -> int:
        self.published.append(len(records))
        return self.takers


def forwarded(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value("gateway_telemetry_records_total", {"outcome": outcome})


async def test_records_are_handed_over_and_counted_as_forwarded() -> None:
    sink, metrics = CountingSink(takers=1), Metrics()
    wired: TelemetrySink = sink
    await SinkStage(telemetry=wired, metrics=metrics).forward(
        [out_record(telemetry_pb2.TelemetryRecord(vin="V"))] * 3
    )
    assert sink.published == [3] and forwarded(metrics, "forwarded") == 3
    assert forwarded(metrics, "no_subscriber") == 0


async def test_records_nobody_takes_count_as_no_subscriber_and_an_empty_batch_is_not_published() -> None:
    sink, metrics = CountingSink(takers=0), Metrics()
    stage = SinkStage(telemetry=sink, metrics=metrics)
    await stage.forward([])
    assert sink.published == []
    await stage.forward([out_record(telemetry_pb2.TelemetryRecord(vin="V"))])
    assert forwarded(metrics, "no_subscriber") == 1
