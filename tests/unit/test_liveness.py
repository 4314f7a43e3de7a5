"""/healthz liveness: wedged when messages wait and none is processed for wedge_after_s while
the store takes writes; driven by the injectable clock (no sleeping)."""

from __future__ import annotations

from gateway._gen.telematics.v1 import telemetry_pb2
from gateway.clock import ManualClock
from gateway.egress.record import out_record
from gateway.egress.telemetry import TelemetryFanout
from gateway.liveness import Liveness, waiting_by_design


class Pipeline:
    """Stands in for the pipeline's backlog and progress counters."""

    def __init__(self) -> None:
        self.queued = 0
        self.processed = 0
        self.store_down = False


def liveness(clock: ManualClock, p: Pipeline, wedge_after_s: float = 60.0) -> Liveness:
    return Liveness(
        clock=clock, wedge_after_s=wedge_after_s,
        backlog=lambda: p.queued, progress=lambda: p.processed, excused=lambda: p.store_down,
    )


def test_messages_queued_without_progress_for_wedge_after_s_is_wedged() -> None:
    clock, p = ManualClock(), Pipeline()
    live = liveness(clock, p)
    p.queued = 120
    assert live.wedged() is None
    clock.advance(59)
    assert live.wedged() is None
    clock.advance(1)
    reason = live.wedged()
    assert reason is not None and "120 messages queued" in reason and "60 s" in reason


def test_progress_restarts_the_count() -> None:
    clock, p = ManualClock(), Pipeline()
    live = liveness(clock, p)
    p.queued = 5
    clock.advance(50)
    p.processed += 1  # a batch went through
    assert live.wedged() is None
    clock.advance(50)
    assert live.wedged() is None  # 50 s since the progress, not 100
    clock.advance(10)
    assert live.wedged() is not None


def test_an_idle_gateway_with_nothing_queued_is_alive_however_long() -> None:
    clock, p = ManualClock(), Pipeline()
    live = liveness(clock, p)
    for _ in range(10):
        clock.advance(3600)
        assert live.wedged() is None


def test_a_gateway_waiting_for_its_database_is_alive() -> None:
    clock, p = ManualClock(), Pipeline()
    live = liveness(clock, p)
    p.queued, p.store_down = 1000, True
    clock.advance(600)
    assert live.wedged() is None
    p.store_down = False  # back: the standstill counts from now
    clock.advance(59)
    assert live.wedged() is None
    clock.advance(1)
    assert live.wedged() is not None


def test_a_wedged_gateway_that_moves_again_is_alive() -> None:
    clock, p = ManualClock(), Pipeline()
    live = liveness(clock, p, wedge_after_s=10)
    p.queued = 1
    assert live.wedged() is None
    clock.advance(10)
    assert live.wedged() is not None
    p.processed += 1
    assert live.wedged() is None


async def test_a_subscriber_that_does_not_read_excuses_the_standstill_and_one_that_reads_not() -> None:
    fanout = TelemetryFanout(queue_size=2)
    slow = fanout.subscribe(frozenset())
    reading = fanout.subscribe(frozenset())
    record = out_record(
        telemetry_pb2.TelemetryRecord(vin="WP0ZZZ99ZJS300011", sequence=1, service="car-finder")
    )
    assert not waiting_by_design(store_available=True, sink_ready=True, fanout=fanout)
    for _ in range(2):  # both queues full now; the next publish would wait
        await fanout.publish([record])
    assert waiting_by_design(store_available=True, sink_ready=True, fanout=fanout)
    while not reading.queue.empty():
        await reading.get()
    assert waiting_by_design(store_available=True, sink_ready=True, fanout=fanout)  # slow still full
    while not slow.queue.empty():
        await slow.get()
    assert not waiting_by_design(store_available=True, sink_ready=True, fanout=fanout)


def test_a_store_or_durable_sink_that_is_down_excuses_the_standstill() -> None:
    fanout = TelemetryFanout(queue_size=2)
    assert waiting_by_design(store_available=False, sink_ready=True, fanout=fanout)
    assert waiting_by_design(store_available=True, sink_ready=False, fanout=fanout)
    assert not waiting_by_design(store_available=True, sink_ready=True, fanout=fanout)
