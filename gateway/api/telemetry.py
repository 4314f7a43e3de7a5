"""telematics.v1.TelemetryService: batched telemetry after the privacy rules.

With the live gRPC sink the records of this gateway's pipeline as they pass; with the JetStream
sink (README "Telemetry sinks") every gateway's records from the stream, after the client's
cursor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gateway._gen.telematics.v1 import telemetry_pb2, telemetry_pb2_grpc
from gateway.api.errors import ApiError, check_retained, stream
from gateway.egress.jetstream import CursorPruned, JetStreamSink, SinkUnavailable
from gateway.egress.telemetry import TelemetryFanout
from gateway.going_away import GoingAway
from gateway.metrics import Metrics

MAX_SUBSCRIBERS = 64


class TelemetryService(telemetry_pb2_grpc.TelemetryServiceServicer):
    def __init__(
        self, *, fanout: TelemetryFanout, metrics: Metrics, jetstream: JetStreamSink | None = None
    ) -> None:
        """fanout: the live sink's subscribers. jetstream: the durable sink, read instead of the
        fan-out when set."""
        self._fanout = fanout
        self._metrics = metrics
        self._jetstream = jetstream

    @stream("SubscribeTelemetry")
    async def SubscribeTelemetry(
        self, request: telemetry_pb2.SubscribeTelemetryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[telemetry_pb2.TelemetryRecords]:
        services = frozenset(request.services)
        if self._jetstream is not None:
            async for stored in self._from_stream(self._jetstream, request.after_cursor, services):
                yield stored
            return
        if request.after_cursor:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "after_cursor needs telemetry_sink = jetstream (the live gRPC sink keeps no records)",
            )
        if len(self._fanout.subscribers) >= MAX_SUBSCRIBERS:
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {MAX_SUBSCRIBERS} telemetry subscribers",
            )
        sub = self._fanout.subscribe(services)
        try:
            while (records := await sub.get()) is not None:
                yield records
        finally:
            self._fanout.unsubscribe(sub)

    async def _from_stream(
        self, sink: JetStreamSink, after_cursor: int, services: frozenset[str]
    ) -> AsyncIterator[telemetry_pb2.TelemetryRecords]:
        if sink.readers >= MAX_SUBSCRIBERS:
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {MAX_SUBSCRIBERS} telemetry subscribers",
            )
        try:
            async for stored in sink.records(after_cursor, services):
                yield stored
        except SinkUnavailable as exc:
            raise ApiError(grpc.StatusCode.UNAVAILABLE, f"{exc}; resume from the last cursor") from None
        except CursorPruned as exc:
            check_retained(exc.after, exc.first)  # OUT_OF_RANGE
            raise  # not reached: check_retained raises for a pruned cursor
        raise GoingAway()  # records() ends only when the gateway stops
