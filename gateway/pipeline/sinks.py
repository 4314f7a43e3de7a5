"""The sinks stage: a batch's telemetry records handed to the telemetry sink (egress/sink.py).

The pipeline calls it before the batch's commit, on purpose (README "Telemetry sinks"): the
sink has the records before the commit marks their messages as seen (replay window) and long
before the acknowledgement, so after a crash the broker delivers them again and they are handed
over again (at least once; a durable sink drops a repeat by message id), never lost."""

from __future__ import annotations

from collections import Counter

from gateway.egress.record import OutRecord
from gateway.egress.sink import TelemetrySink
from gateway.metrics import Metrics


class SinkStage:
    def __init__(self, *, telemetry: TelemetrySink, metrics: Metrics) -> None:
        self._telemetry = telemetry
        self._forwarded = metrics.telemetry_records.labels("forwarded")
        self._no_subscriber = metrics.telemetry_records.labels("no_subscriber")

    async def forward(self, records: list[OutRecord]) -> None:
        """Hand the records over; waits while a durable sink is down."""
        if records:
            got = await self._telemetry.publish(records)
            (self._forwarded if got else self._no_subscriber).inc(len(records))


def keyed(
    records: list[OutRecord],
) -> list[tuple[tuple[str, int, int], OutRecord]]:
    """Each record with (vin, sequence, k): the k-th record of its envelope in the batch (a
    batch applied again gives the same records under the same keys)."""
    seen: Counter[tuple[str, int]] = Counter()
    out = []
    for r in records:
        k = seen[r.vin, r.sequence]
        seen[r.vin, r.sequence] += 1
        out.append(((r.vin, r.sequence, k), r))
    return out
