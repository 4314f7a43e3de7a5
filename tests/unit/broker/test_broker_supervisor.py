"""The managed broker's supervisor (gateway/broker/supervisor.py): restarts after a death, with
a bounded backoff driven by injected time (no test here waits on the wall clock)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from gateway.backoff import Backoff
from gateway.broker.managed import BrokerStartError
from gateway.broker.supervisor import RESTART_BACKOFF, BrokerSupervisor, exit_status
from gateway.metrics import Metrics


class ScriptedBroker:
    """A BrokerProcess whose deaths the test orders and whose next starts may fail."""

    def __init__(self, failing_starts: int = 0) -> None:
        self.pid: int | None = 100
        self.failing_starts = failing_starts
        self.starts = 0
        self._exits: asyncio.Queue[int] = asyncio.Queue()
        self.restarted = asyncio.Event()

    def stop(self) -> None:
        self.pid = None
        self._exits.put_nowait(0)

    def die(self, code: int) -> None:
        self.restarted.clear()
        self._exits.put_nowait(code)

    async def wait_exit(self) -> int:
        return await self._exits.get()

    async def restart(self) -> None:
        if self.failing_starts:
            self.failing_starts -= 1
            raise BrokerStartError("cannot start the managed broker: 127.0.0.1:1883 is already in use")
        self.starts += 1
        self.pid = 100 + self.starts
        self.restarted.set()


class Recorder:
    """The injected sleep: records each delay, and what /readyz would say meanwhile."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.up_while_waiting: list[bool] = []
        self.supervisor: BrokerSupervisor | None = None

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        assert self.supervisor is not None
        self.up_while_waiting.append(self.supervisor.up)
        await asyncio.sleep(0)  # yields only; the delay is not waited out


def restarts(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("gateway_broker_restarts_total")


@asynccontextmanager
async def supervising(
    broker: ScriptedBroker, *, backoff: Backoff = RESTART_BACKOFF, stable_s: float = 60.0,
    monotonic: Callable[[], float] = lambda: 0.0,
) -> AsyncIterator[tuple[BrokerSupervisor, Recorder, Metrics]]:
    metrics, recorder = Metrics(), Recorder()
    supervisor = BrokerSupervisor(broker, restarts=metrics.broker_restarts, backoff=backoff,
                                  stable_s=stable_s, monotonic=monotonic, sleep=recorder.sleep)
    recorder.supervisor = supervisor
    task = asyncio.create_task(supervisor.run())
    try:
        yield supervisor, recorder, metrics
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def restarted(broker: ScriptedBroker) -> None:
    await asyncio.wait_for(broker.restarted.wait(), 10)


async def test_a_killed_broker_is_started_again_after_the_short_delay_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = ScriptedBroker()
    async with supervising(broker) as (supervisor, recorder, metrics):
        assert supervisor.up and restarts(metrics) == 0
        with caplog.at_level(logging.WARNING, "gateway.broker.supervisor"):
            broker.die(-signal.SIGKILL)
            await restarted(broker)
        assert broker.starts == 1 and restarts(metrics) == 1
        assert recorder.delays == [0.2] and recorder.up_while_waiting == [False]
        assert supervisor.up
        died = [r for r in caplog.records if "died" in r.getMessage()]
        assert [r.levelno for r in died] == [logging.WARNING]
        assert "pid 100" in died[0].getMessage() and "killed by SIGKILL" in died[0].getMessage()


async def test_a_broker_that_cannot_start_is_retried_with_doubling_delays_up_to_the_bound() -> None:
    broker = ScriptedBroker(failing_starts=4)
    async with supervising(broker, backoff=Backoff(1.0, 4.0)) as (supervisor, recorder, metrics):
        broker.die(1)
        await restarted(broker)
        assert recorder.delays == [1.0, 2.0, 4.0, 4.0, 4.0]
        assert recorder.up_while_waiting == [False] * 5
        assert supervisor.up and broker.starts == 1 and restarts(metrics) == 1


async def test_a_broker_that_keeps_dying_quickly_is_restarted_ever_more_slowly() -> None:
    broker = ScriptedBroker()
    async with supervising(broker, backoff=Backoff(1.0, 8.0)) as (_, recorder, metrics):
        for _ in range(3):
            broker.die(1)
            await restarted(broker)
        assert recorder.delays == [1.0, 2.0, 4.0] and restarts(metrics) == 3


async def test_a_broker_that_ran_a_while_before_dying_starts_over_at_the_short_delay() -> None:
    now = [0.0]
    broker = ScriptedBroker()
    async with supervising(broker, backoff=Backoff(1.0, 8.0), stable_s=60.0,
                           monotonic=lambda: now[0]) as (_, recorder, _metrics):
        broker.die(1)
        await restarted(broker)
        broker.die(1)
        await restarted(broker)
        now[0] += 60.0  # the third life lasts stable_s
        broker.die(1)
        await restarted(broker)
        assert recorder.delays == [1.0, 2.0, 1.0]


async def test_a_broker_stopped_on_purpose_is_not_restarted() -> None:
    broker = ScriptedBroker()
    metrics, recorder = Metrics(), Recorder()
    supervisor = BrokerSupervisor(broker, restarts=metrics.broker_restarts, sleep=recorder.sleep)
    recorder.supervisor = supervisor
    task = asyncio.create_task(supervisor.run())
    broker.stop()
    await asyncio.wait_for(task, 10)  # run() returns by itself
    assert broker.starts == 0 and recorder.delays == [] and restarts(metrics) == 0


def test_exit_status_names_the_signal_or_the_exit_code() -> None:
    assert exit_status(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_status(3) == "exit code 3"
