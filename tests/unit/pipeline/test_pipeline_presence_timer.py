"""The presence timer (pipeline.py): a timer on the pipeline's clock runs out liveness timeouts
when no batch comes, through the drain loop, so it never runs while a batch is applied."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from test_pipeline import REFERENCE, VIN, FakeStore, hello

from gateway.clock import ManualClock
from gateway.egress.telemetry import TelemetryFanout
from gateway.metrics import Metrics
from gateway.model import Presence, VehicleSession
from gateway.pipeline import Message, Pipeline
from gateway.session.hub import EventHub
from gateway.session.tracker import SessionTracker
from gateway.store.base import PendingEvent, StoredEvent

HOUR = 3600.0  # far beyond any liveness timeout of the shipped presence data


class GatedStore(FakeStore):
    """A FakeStore whose commits wait for `gate` while `hold` is set, and log when they start."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.gate = asyncio.Event()

    async def commit_batch(
        self, vehicles: Sequence[VehicleSession], events: Sequence[PendingEvent]
    ) -> list[StoredEvent]:
        self.log.append("commit started")
        if self.hold:
            await self.gate.wait()
        return await super().commit_batch(vehicles, events)


def make(
    store: FakeStore, clock: ManualClock, metrics: Metrics
) -> tuple[Pipeline, SessionTracker, list[int]]:
    acked: list[int] = []
    tracker = SessionTracker()

    def ack(batch: Sequence[Message]) -> None:
        acked.append(len(batch))

    p = Pipeline(
        tracker=tracker, store=store, hub=EventHub(), telemetry=TelemetryFanout(queue_size=10),
        metrics=metrics, clock=clock, reference=REFERENCE, max_payload_bytes=4096, queue_messages=100,
        ack=ack, pause_reading=lambda: None, resume_reading=lambda: None,
    )
    return p, tracker, acked


async def turns_until(done: Callable[[], bool], limit: int = 500) -> None:
    """Step the event loop (no time passes) until `done()` is true."""
    for _ in range(limit):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError("not reached within the loop turns given")


def online(tracker: SessionTracker) -> bool:
    session = tracker.get(VIN)
    assert session is not None
    return session.presence is Presence.ONLINE


async def test_a_silent_car_times_out_on_the_clock_without_any_batch() -> None:
    store, clock, metrics = FakeStore(), ManualClock(), Metrics()
    p, tracker, acked = make(store, clock, metrics)
    runner = asyncio.create_task(p.run())
    try:
        p.on_batch([hello()])
        await turns_until(lambda: acked == [1])
        assert online(tracker)
        clock.advance(HOUR)  # only the clock moves: no message arrives
        await turns_until(lambda: len(store.commits) == 2)
        assert store.commits[-1] == ([VIN], ["offline"]) and not online(tracker)
        assert metrics.registry.get_sample_value("gateway_presence_timeouts_total") == 1
        # A tick is not a batch from the broker: nothing acknowledged, no batch observed.
        assert acked == [1]
        assert metrics.registry.get_sample_value("gateway_ingress_batch_messages_count") == 1
    finally:
        p.close()
        await runner


async def test_the_timer_waits_for_the_batch_being_applied_single_writer() -> None:
    store, clock, metrics = GatedStore(), ManualClock(), Metrics()
    p, tracker, acked = make(store, clock, metrics)
    runner = asyncio.create_task(p.run())
    try:
        p.on_batch([hello()])
        await turns_until(lambda: acked == [1])
        store.hold = True
        p.on_batch([hello(2)])  # a repeated Hello: a snapshot write, held at the store
        await turns_until(lambda: store.log.count("commit started") == 2)
        clock.advance(HOUR)  # the timer fires while the batch waits for its commit
        for _ in range(200):
            await asyncio.sleep(0)
        # The tick has not started: the car the batch is applying is not expired under it.
        assert store.log.count("commit started") == 2 and online(tracker)
        store.gate.set()
        await turns_until(lambda: len(store.commits) == 3)
        assert not online(tracker) and store.commits[-1] == ([VIN], ["offline"])
        assert acked == [1, 1] and store.log.count("commit started") == 3
    finally:
        store.gate.set()
        p.close()
        await runner


async def test_cancelling_run_ends_the_timer_too() -> None:
    clock = ManualClock()
    p, _, _ = make(FakeStore(), clock, Metrics())
    runner = asyncio.create_task(p.run())
    await turns_until(lambda: any(t.get_name() == "gateway.pipeline.presence" for t in asyncio.all_tasks()))
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert not any(t.get_name() == "gateway.pipeline.presence" for t in asyncio.all_tasks())
