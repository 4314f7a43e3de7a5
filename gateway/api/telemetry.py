"""telematics.v1.TelemetryService: live, batched telemetry after the privacy rules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gateway._gen.telematics.v1 import telemetry_pb2, telemetry_pb2_grpc
from gateway.api.errors import ApiError, stream
from gateway.egress.telemetry import TelemetryFanout
from gateway.metrics import Metrics

MAX_SUBSCRIBERS = 64


class TelemetryService(telemetry_pb2_grpc.TelemetryServiceServicer):
    def __init__(self, *, fanout: TelemetryFanout, metrics: Metrics) -> None:
        self._fanout = fanout
        self._metrics = metrics

    @stream("SubscribeTelemetry")
    async def SubscribeTelemetry(
        self, request: telemetry_pb2.SubscribeTelemetryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[telemetry_pb2.TelemetryRecords]:
        if len(self._fanout.subscribers) >= MAX_SUBSCRIBERS:
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {MAX_SUBSCRIBERS} telemetry subscribers",
            )
        sub = self._fanout.subscribe(frozenset(request.services))
        try:
            while (records := await sub.get()) is not None:
                yield records
        finally:
            self._fanout.unsubscribe(sub)
