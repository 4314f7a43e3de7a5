"""/healthz liveness: wedged when messages wait and none is processed for wedge_after_s while
the store takes writes; driven by the injectable clock (no sleeping)."""

from __future__ import annotations

from gateway.clock import ManualClock
from gateway.liveness import Liveness


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
