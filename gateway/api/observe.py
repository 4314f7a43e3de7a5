"""gRPC server latency by method and status code: gateway_grpc_server_handling_seconds.

An interceptor, outermost, so a call refused at the edge (gateway/api/auth.py) is timed with
its code too. Method labels come from the service descriptors only (``METHODS``): a name the
server does not serve is never a label. Server streams are not timed (their duration is the
subscription's lifetime, not a latency); they are counted by gateway_grpc_requests_total and
gateway_grpc_stream_subscribers. The interceptor also creates every method's series at start
(requests by every code, the stream gauge, the OK latency), so rate() works before the first
call (README "Metrics", docs/metrics.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pool

from gateway.api.auth import Handler
from gateway.api.server import SERVICE_NAMES
from gateway.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Method:
    path: str  # /package.Service/Method, as the server sees it
    name: str  # the label: the short name, as gateway_grpc_requests_total has it
    server_streaming: bool


def _methods() -> tuple[Method, ...]:
    pool = descriptor_pool.Default()
    return tuple(
        Method(f"/{service.full_name}/{m.name}", m.name, m.server_streaming)
        for service in map(pool.FindServiceByName, SERVICE_NAMES)
        for m in service.methods
    )


METHODS = _methods()
_UNARY = {m.path: m.name for m in METHODS if not m.server_streaming}


def _status(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else default


class LatencyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, *, metrics: Metrics, clock: Callable[[], float] = time.perf_counter) -> None:
        """clock: a monotonic clock in seconds (a test may step it)."""
        self._seconds = metrics.grpc_server_handling_seconds
        self._clock = clock
        for method in METHODS:
            for code in grpc.StatusCode:
                metrics.grpc_requests.labels(method.name, code.name)
            if method.server_streaming:
                metrics.grpc_stream_subscribers.labels(method.name)
            else:
                self._seconds.labels(method.name, grpc.StatusCode.OK.name)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        name = _UNARY.get(handler_call_details.method)
        if handler is None or name is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = self._clock()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)
                code = _status(context, grpc.StatusCode.OK)
                return response
            except BaseException:  # an abort (its code is on the context) or a cancellation
                code = _status(context, grpc.StatusCode.CANCELLED)
                raise
            finally:
                self._seconds.labels(name, code.name).observe(self._clock() - started)

        return cast(Handler, grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        ))
