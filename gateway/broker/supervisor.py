"""Restart the managed broker when it dies: bounded backoff, a counter, a log line.

While the broker is down the gateway's MQTT session is down too and /readyz says so; the
session reconnects by itself (gateway/ingress/mqtt_session.py) once the broker listens again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

from gateway.backoff import Backoff
from gateway.broker.managed import BrokerStartError

log = logging.getLogger(__name__)


# The first restart comes quickly (the cars and the gateway's session reconnect by themselves);
# a broker that keeps failing to start is tried every 30 s.
RESTART_BACKOFF = Backoff(initial_s=0.2, max_s=30.0)


class BrokerProcess(Protocol):
    """What the supervisor needs of a broker (gateway/broker/managed.py ManagedBroker)."""

    @property
    def pid(self) -> int | None:
        """None once stopped on purpose."""
        ...

    async def wait_exit(self) -> int: ...

    async def restart(self) -> None: ...


class Counter(Protocol):
    def inc(self) -> None: ...


def exit_status(code: int) -> str:
    """Popen's return code in words: 'exit code 1', 'killed by SIGKILL'."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class BrokerSupervisor:
    """Runs beside the gateway; ``run`` returns when the broker was stopped on purpose (its
    pid is None then), or by cancellation.

    A broker that dies is started again after a delay that doubles per failed start up to
    backoff.max_s (a broker that cannot start, e.g. its port was taken meanwhile, is not
    hammered); a broker that ran for ``stable_s`` before dying starts over at the short delay.
    """

    def __init__(
        self,
        broker: BrokerProcess,
        *,
        restarts: Counter,
        backoff: Backoff = RESTART_BACKOFF,
        stable_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """restarts: counted once per start after a death. monotonic, sleep: injectable time
        (unit tests drive the loop without waiting; the acceptance test holds a restart)."""
        self._broker = broker
        self._restarts = restarts
        self._backoff = backoff
        self._stable_s = stable_s
        self._monotonic = monotonic
        self.sleep = sleep
        self.up = True  # the broker process runs (readiness: "broker")

    async def run(self) -> None:
        delays = self._backoff.delays()
        while True:
            started = self._monotonic()
            pid = self._broker.pid
            code = await self._broker.wait_exit()
            if self._broker.pid is None:  # stopped on purpose (the gateway stops): no restart
                return
            self.up = False
            if self._monotonic() - started >= self._stable_s:
                delays = self._backoff.delays()
            log.warning("managed mosquitto (pid %s) died: %s; restarting it", pid, exit_status(code))
            await self._start_again(delays)
            self.up = True
            self._restarts.inc()
            log.warning("managed mosquitto restarted (pid %s)", self._broker.pid)

    async def _start_again(self, delays: Iterator[float]) -> None:
        attempt = 0
        while True:
            await self.sleep(next(delays))
            attempt += 1
            try:
                await self._broker.restart()
                return
            except BrokerStartError as exc:
                log.warning("restarting managed mosquitto failed (attempt %d): %s", attempt, exc)
