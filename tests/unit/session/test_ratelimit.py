"""The per-car token buckets (gateway/session/ratelimit.py) on a ManualClock."""

from __future__ import annotations

import pytest

from gateway.clock import ManualClock
from gateway.session.ratelimit import CarLimits, TokenBuckets

A = "WP0ZZZ99ZJS300001"
B = "WP0ZZZ99ZJS300002"


def passed(buckets: TokenBuckets, key: str, n: int, now: float) -> int:
    return sum(buckets.take(key, now) for _ in range(n))


def test_exactly_burst_messages_pass_while_time_stands_still() -> None:
    clock = ManualClock()
    for rate, burst in ((1.0, 1), (3.0, 10), (0.1, 7), (100.0, 1000), (7.0, 3)):
        buckets = TokenBuckets(rate, burst)
        assert passed(buckets, A, burst + 50, clock.now()) == burst


def test_the_bucket_refills_at_rate_up_to_burst() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(10.0, 5)
    assert passed(buckets, A, 5, clock.now()) == 5
    assert not buckets.take(A, clock.now())
    clock.advance(0.1)  # one token's worth
    assert passed(buckets, A, 3, clock.now()) == 1
    clock.advance(0.25)  # two and a half tokens: two whole ones
    assert passed(buckets, A, 3, clock.now()) == 2
    clock.advance(3600)  # refills to burst, not beyond
    assert buckets.tokens(A, clock.now()) == 5
    assert passed(buckets, A, 10, clock.now()) == 5


def test_tokens_never_go_negative_however_long_the_flood() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(2.0, 3)
    for _ in range(100):
        passed(buckets, A, 50, clock.now())
        assert 0.0 <= buckets.tokens(A, clock.now()) <= 3
        clock.advance(0.01)
    # A refused message costs nothing: after one token's time, one message passes.
    clock.advance(0.5)
    assert buckets.take(A, clock.now())


def test_each_vin_has_its_own_bucket() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(1.0, 4)
    assert passed(buckets, A, 100, clock.now()) == 4
    assert passed(buckets, B, 4, clock.now()) == 4  # A's flood took nothing from B
    assert buckets.tokens(B, clock.now()) == 0
    assert not buckets.take(B, clock.now())


def test_full_buckets_are_forgotten_so_memory_follows_the_active_cars() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(10.0, 20)
    for i in range(1000):
        buckets.take(f"VIN{i:014d}", clock.now())
    assert len(buckets) == 1000
    clock.advance(0.05)
    assert buckets.evict(clock.now()) == 0  # 0.1 s until one token refilled: none full yet
    clock.advance(0.06)
    assert buckets.evict(clock.now()) == 1000
    assert len(buckets) == 0
    # A forgotten bucket is a full one: the car gets its whole burst.
    assert passed(buckets, A, 30, clock.now()) == 20
    clock.advance(1.0)  # refilled to 10 of 20: still remembered
    assert buckets.evict(clock.now()) == 0 and buckets.tokens(A, clock.now()) == pytest.approx(10, abs=0.01)


def test_car_limits_count_hellos_apart_from_messages() -> None:
    clock = ManualClock()
    limits = CarLimits(100.0, 1000, 1.0, 2)
    assert passed(limits.hellos, A, 5, clock.now()) == 2
    assert passed(limits.messages, A, 5, clock.now()) == 5


def test_a_rate_of_zero_or_an_empty_burst_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBuckets(0.0, 1)
    with pytest.raises(ValueError, match="burst"):
        TokenBuckets(1.0, 0)


def test_catch_up_suspends_the_limits_until_its_window_ends_and_never_shortens_it() -> None:
    limits = CarLimits(rate_per_s=1.0, burst=1, hello_rate_per_s=1.0, hello_burst=1)
    assert limits.active(100.0)
    limits.catch_up(100.0, 30)
    limits.catch_up(101.0, 5)  # a second, shorter resume does not cut the first window short
    assert not limits.active(129.9)
    assert limits.active(130.0)


def test_a_clock_stepped_back_does_not_refuse_a_car_for_as_long_as_the_step() -> None:
    # The pipeline's clock is wall time: an NTP step back must not turn every active car's
    # bucket into a refusal (its QoS 1 messages would be acknowledged and lost).
    buckets = TokenBuckets(rate_per_s=1.0, burst=3)
    assert [buckets.take("car", 1_000.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("car", 900.0)  # 100 s back: full again, not 100 s of refusals
