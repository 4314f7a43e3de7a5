"""Which flooding cars to shut out at the broker, and until when (pure, driven by the clock).

The per-car token bucket (ratelimit.py) keeps a flood out of the gateway's state, but every
flooded message still crosses the broker, the gateway's one connection to it and the topic
parser, on the same cores as every other car's messages. Measured with the flood benchmark
(`python -m load.bench --scenario flood`): an unpaced flood of ~90,000 messages/s from one car
raised the other cars' p99 latency 4-12x, while the same flood denied by the broker's ACL left
it within 2x. So a car that keeps going far over its limit is *quarantined*: the broker is
told to drop its uplink (gateway/broker/managed.py: a deny line in the ACL), and after
``duration_s`` it is let in again.

A car is quarantined when more than ``excess`` of its messages were refused by its bucket
within one window of ``window_s`` seconds (counted from the first refusal of the window), i.e.
it sent, on average, ``excess / window_s`` messages/s above its limit. The default (5,000 in
10 s, with a limit of 100/s) asks for six times the limit for ten seconds: a car emptying a
backlog after a tunnel stays within its burst, a stuck loop or an attacker does not.
"""

from __future__ import annotations


class FloodQuarantine:
    """Counts refused messages per car; tells when one crosses the line and when to let it in."""

    __slots__ = ("_blocked", "_counts", "duration_s", "excess", "window_s")

    def __init__(self, *, excess: int, window_s: float, duration_s: float) -> None:
        if excess < 1:
            raise ValueError("excess must be at least 1")
        if not window_s > 0 or not duration_s > 0:
            raise ValueError("window_s and duration_s must be above 0")
        self.excess = excess
        self.window_s = window_s
        self.duration_s = duration_s
        self._counts: dict[str, tuple[float, int]] = {}  # vin -> (window start, refused in it)
        self._blocked: dict[str, float] = {}  # vin -> until

    def refused(self, vin: str, now: float) -> bool:
        """One message of ``vin`` was refused by its bucket; True when this makes it quarantined
        (once: a car already quarantined, whose queued messages still arrive, is not again)."""
        if vin in self._blocked:
            return False
        start, count = self._counts.get(vin, (now, 0))
        if not start <= now < start + self.window_s:  # a new window (or the clock stepped back)
            start, count = now, 0
        count += 1
        if count <= self.excess:
            self._counts[vin] = (start, count)
            return False
        self._counts.pop(vin, None)
        self._blocked[vin] = now + self.duration_s
        return True

    def release_due(self, now: float) -> list[str]:
        """The cars whose quarantine is over at ``now`` (removed); also forgets the counts of
        windows that have ended, so the table holds only cars refused within the last window."""
        # Also over: one ending more than its duration from now (the clock stepped back).
        released = [v for v, until in self._blocked.items() if until <= now or until - now > self.duration_s]
        for vin in released:
            del self._blocked[vin]
        if self._counts:
            ended = [v for v, (start, _) in self._counts.items() if not start <= now < start + self.window_s]
            for vin in ended:
                del self._counts[vin]
        return released

    def due(self, now: float) -> bool:
        """A quarantine is over: worth a tick even when no message arrives."""
        return any(until <= now for until in self._blocked.values())

    @property
    def blocked(self) -> frozenset[str]:
        return frozenset(self._blocked)

    def until(self, vin: str) -> float | None:
        return self._blocked.get(vin)

    @property
    def counting(self) -> int:
        """Cars with refusals counted in an open window (diagnostics)."""
        return len(self._counts)

    def __len__(self) -> int:
        """How many cars are quarantined."""
        return len(self._blocked)
