"""grpc.health.v1 follows readiness: one source of truth (Gateway.readiness, also /readyz).

The servicer's status is set whenever readiness changes (a Health/Watch client is told at
once, a Health/Check reads the current status); it is not computed per request. Readiness is
re-evaluated every `interval_s` and at once when poked (the MQTT session's connect/disconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from grpc_health.v1 import health_pb2

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.25

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthSetter(Protocol):
    """What is used of grpc_health's aio HealthServicer."""

    async def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None: ...


class HealthPublisher:
    def __init__(
        self,
        *,
        readiness: Callable[[], dict[str, bool]],
        servicer: HealthSetter,
        services: Sequence[str],
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        """services: every name the servicer answers for ("" = the server overall)."""
        self._readiness = readiness
        self._servicer = servicer
        self._services = tuple(services)
        self._interval_s = interval_s
        self._woken = asyncio.Event()
        self.serving: bool | None = None  # what was last published

    def poke(self) -> None:
        """Something readiness depends on changed: re-evaluate now, not at the next interval."""
        self._woken.set()

    async def publish(self) -> bool:
        """Set the servicer's status from readiness if it changed; return whether ready."""
        parts = self._readiness()
        ready = all(parts.values())
        if ready != self.serving:
            status = SERVING if ready else NOT_SERVING
            for name in self._services:
                await self._servicer.set(name, status)
            if self.serving is not None:  # the first publication is the start, not a change
                down = ", ".join(sorted(n for n, up in parts.items() if not up))
                if ready:
                    log.info("serving again", extra={"event": "health_serving"})
                else:
                    log.warning("not serving: %s unavailable", down,
                                extra={"event": "health_not_serving", "down": down})
            self.serving = ready
        return ready

    async def run(self) -> None:
        while True:
            await self.publish()
            with contextlib.suppress(TimeoutError):  # the interval passed without a poke
                await asyncio.wait_for(self._woken.wait(), self._interval_s)
            self._woken.clear()
