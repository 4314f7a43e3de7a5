"""Which flooding cars are quarantined, and when they are let in (gateway/session/quarantine.py)."""

from __future__ import annotations

import pytest

from gateway.session.quarantine import FloodQuarantine

A = "WP0ZZZ99ZJS300001"
B = "WP0ZZZ99ZJS300002"


def refuse(q: FloodQuarantine, vin: str, n: int, now: float) -> list[bool]:
    return [q.refused(vin, now) for _ in range(n)]


def test_a_car_is_quarantined_at_the_first_refusal_beyond_the_excess_and_only_once() -> None:
    q = FloodQuarantine(excess=3, window_s=10, duration_s=60)
    assert refuse(q, A, 3, 100.0) == [False] * 3
    assert q.refused(A, 100.5) is True
    assert q.blocked == {A} and q.until(A) == 160.5
    assert refuse(q, A, 5, 101.0) == [False] * 5  # its queued messages do not quarantine it again
    assert len(q) == 1


def test_refusals_spread_over_more_than_a_window_do_not_add_up() -> None:
    q = FloodQuarantine(excess=3, window_s=10, duration_s=60)
    assert refuse(q, A, 3, 100.0) == [False] * 3
    assert refuse(q, A, 3, 110.0) == [False] * 3  # a new window starts with this refusal
    assert q.refused(A, 119.9) is True


def test_cars_are_counted_apart() -> None:
    q = FloodQuarantine(excess=2, window_s=10, duration_s=60)
    assert refuse(q, A, 2, 0.0) + refuse(q, B, 2, 0.0) == [False] * 4
    assert q.refused(B, 1.0) is True
    assert q.blocked == {B}


def test_the_quarantine_ends_after_its_duration_and_the_car_starts_afresh() -> None:
    q = FloodQuarantine(excess=1, window_s=10, duration_s=60)
    refuse(q, A, 2, 0.0)
    assert q.release_due(59.9) == [] and not q.due(59.9)
    assert q.due(60.0)
    assert q.release_due(60.0) == [A]
    assert q.blocked == frozenset() and q.release_due(61.0) == []
    assert q.refused(A, 61.0) is False  # counting starts again from zero


def test_a_clock_stepped_back_neither_keeps_a_car_out_for_longer_nor_counts_into_the_future() -> None:
    q = FloodQuarantine(excess=1, window_s=10, duration_s=60)
    refuse(q, A, 2, 1000.0)
    assert q.release_due(500.0) == [A]  # ending 560 s from "now": more than its duration
    q.refused(B, 1000.0)
    assert q.refused(B, 900.0) is False  # before the window's start: a new window


def test_the_counts_of_ended_windows_are_forgotten() -> None:
    q = FloodQuarantine(excess=5, window_s=10, duration_s=60)
    for i in range(100):
        q.refused(f"WP0ZZZ99ZJS3{i:05d}", 0.0)
    assert q.counting == 100
    q.release_due(10.0)
    assert q.counting == 0


@pytest.mark.parametrize(("excess", "window_s", "duration_s"), [(0, 1.0, 1.0), (1, 0.0, 1.0), (1, 1.0, 0.0)])
def test_settings_out_of_range_are_refused(excess: int, window_s: float, duration_s: float) -> None:
    with pytest.raises(ValueError):
        FloodQuarantine(excess=excess, window_s=window_s, duration_s=duration_s)
