"""Per-car rate limits: a token bucket per VIN, driven by the pipeline's clock (pure, no I/O).

The bucket is kept as one float per car, its *theoretical arrival time* (the GCRA form of a
token bucket): ``tat`` is the moment the bucket would be full again. A car has

    tokens(now) = burst - max(0, tat - now) * rate

and a message may pass while at least one token is left. Passing moves ``tat`` on by one
token's worth (1 / rate); a refused message changes nothing, so a car over its limit stays at
zero tokens (never below) and gets one more message per 1 / rate seconds. The result is the
same as a classic bucket of ``burst`` tokens refilled at ``rate`` per second, with half the
state.

Memory: a bucket that has refilled completely is the same as no bucket (a new car starts
full), so it is dropped. Buckets are kept in order of their last passed message; ``evict``
(once per pipeline batch) removes full buckets from the front. So the table holds only the
cars that passed a message within the last ``burst / rate`` seconds (10 s with the defaults),
about 150 bytes each, not one entry per car ever seen.
"""

from __future__ import annotations

from collections import OrderedDict

from gateway.session.quarantine import FloodQuarantine

# Float slack, in tokens, for "exactly `burst` messages pass at one instant": tat grows by
# repeated additions of 1 / rate, which may land a few ulps above (burst - 1) / rate. Times are
# kept relative to the first one seen (small numbers, fine ulps), not as unix seconds.
_SLACK_TOKENS = 1e-3


class TokenBuckets:
    """One token bucket per key (a VIN), ``rate`` tokens per second, at most ``burst``."""

    __slots__ = ("_interval", "_origin", "_span", "_tat", "_tolerance", "burst", "rate")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be above 0")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate_per_s
        self.burst = burst
        self._interval = 1.0 / rate_per_s
        # A message passes while tat - now <= this (at least one token left).
        self._tolerance = (burst - 1 + _SLACK_TOKENS) / rate_per_s
        # How far ahead of now a bucket's tat can be: a whole burst. Further ahead only when the
        # (wall) clock stepped back; the bucket then restarts full instead of refusing the car
        # for as long as the step.
        self._span = (burst + _SLACK_TOKENS) / rate_per_s
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._origin: float | None = None

    def _rel(self, now: float) -> float:
        if self._origin is None:
            self._origin = now
        return now - self._origin

    def take(self, key: str, now: float) -> bool:
        """True and one token used when ``key`` has one left; False (nothing changed) otherwise."""
        origin = self._origin  # self._rel(now) inline: one call fewer on every message
        if origin is None:
            origin = self._origin = now
        now -= origin
        tat = self._tat.get(key)
        if tat is None or tat < now:
            tat = now  # full (or new): the bucket's level starts at burst
        elif tat - now > self._tolerance:
            if tat - now <= self._span:
                return False
            tat = now  # the clock stepped back (see _span)
        self._tat[key] = tat + self._interval
        self._tat.move_to_end(key)
        return True

    def tokens(self, key: str, now: float) -> float:
        """Tokens left for ``key`` at ``now`` (for tests and diagnostics), 0..burst."""
        tat = self._tat.get(key)
        if tat is None:
            return float(self.burst)
        now = self._rel(now)
        return max(0.0, min(float(self.burst), self.burst - max(0.0, tat - now) * self.rate))

    def evict(self, now: float) -> int:
        """Forget buckets that are full again (oldest first); returns how many were dropped."""
        dropped = 0
        now = self._rel(now)
        tat = self._tat
        while tat:
            key, due = next(iter(tat.items()))
            if due > now:
                break  # the front was passed last longest ago; the rest follow it
            del tat[key]
            dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._tat)


class CarLimits:
    """The gateway's per-car limits: every uplink message and will, and (tighter) Hellos.

    ``messages``: every message on a car's topics, valid or not, before it is decoded, so a
    flood of bad payloads costs as little as one of good ones. ``hellos``: each MQTT connection
    of a car produces one Hello (the gateway does not see CONNECT, the broker does), so limiting
    Hellos limits what a reconnect storm of one car costs the gateway: an online event, a store
    write and the entitlement engine's boot handling per Hello.
    """

    __slots__ = ("catch_up_until", "hellos", "messages", "quarantine")

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        hello_rate_per_s: float,
        hello_burst: int,
        quarantine: FloodQuarantine | None = None,
    ) -> None:
        """quarantine: who is shut out at the broker for flooding far over ``rate_per_s``
        (quarantine.py); None: the buckets alone."""
        self.messages = TokenBuckets(rate_per_s, burst)
        self.hellos = TokenBuckets(hello_rate_per_s, hello_burst)
        self.quarantine = quarantine
        self.catch_up_until = 0.0

    def catch_up(self, now: float, seconds: float) -> None:
        """Suspend the limits until ``now + seconds``: the broker is delivering what it queued
        for the gateway's persistent session while the gateway was away. That backlog arrives
        at the gateway's pace, not the cars' (a car that sent one message every 10 s through a
        5-hour outage has 1,800 waiting), and it was accepted by the broker from cars within
        their rate then: dropping it would lose data the cars were told was delivered (R28:
        charging records without loss)."""
        self.catch_up_until = max(self.catch_up_until, now + seconds)

    def active(self, now: float) -> bool:
        return now >= self.catch_up_until

    def evict(self, now: float) -> None:
        self.messages.evict(now)
        self.hellos.evict(now)
