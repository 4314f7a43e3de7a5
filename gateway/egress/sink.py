"""The telemetry sink seam: where telemetry records leave the gateway.

One method, like Tesla fleet-telemetry's `Producer`: the pipeline hands each batch of records,
already judged by the privacy rules (R22: a withheld location is cleared before this point), to
the sink and acknowledges the cars' QoS 1 messages to the broker only after `publish` returned.
So a durable sink holds every acknowledged record, and a sink that cannot take records holds
the ingest (backpressure) instead of losing them.

Implementations: `TelemetryFanout` (gateway/egress/telemetry.py), the live fan-out to this
gateway's SubscribeTelemetry streams, and `JetStreamSink` (gateway/egress/jetstream.py), a
durable NATS JetStream stream every gateway's SubscribeTelemetry reads. Kafka would be the next
one: a producer with acks=all and idempotence, keyed by VIN (README "Telemetry sinks").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.egress.record import OutRecord


class TelemetrySink(Protocol):
    async def publish(self, records: Sequence[OutRecord]) -> int:
        """Hand over one batch (each record as its wire bytes, built once: egress/record.py);
        return when the sink has it (a durable sink: stored, with retries while it is down).
        Returns how many destinations took records (0: none wanted them, counted as
        no_subscriber)."""
        ...
