"""The parsed uplink topics, by topic string: the decode stage's first step for every message.

A fleet publishes on the same few topics over and over (two per car), so parsing each one
(prefix, split, the VIN's pattern) once is enough. Only accepted topics are kept: a flood of
made-up topics must not fill the cache, and their rejection is counted on every message as
before. Bounded: with more distinct topics than `capacity` (a 1M-car fleet) the cache is
emptied and refilled, which costs one parse per miss and never more memory than its capacity.
"""

from __future__ import annotations

from gateway import topics
from gateway.decode import Rejected, decode_topic

DEFAULT_CAPACITY = 65_536


class TopicCache:
    __slots__ = ("_capacity", "parsed")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self._capacity = capacity
        # topic -> decode_topic's (vin, channel); public for the stage's inlined lookup.
        self.parsed: dict[str, tuple[str, topics.Channel]] = {}

    def __len__(self) -> int:
        return len(self.parsed)

    def decode(self, topic: str) -> tuple[str, topics.Channel] | Rejected:
        """What decode_topic(topic) returns, from the cache when the topic was seen before."""
        parsed = self.parsed.get(topic)
        if parsed is not None:
            return parsed
        result = decode_topic(topic)
        if not isinstance(result, Rejected):
            if len(self.parsed) >= self._capacity:
                # Emptied whole rather than one entry at a time: O(1) per miss amortised, and a
                # fleet larger than the cache gains nothing from a cleverer policy (round robin).
                self.parsed.clear()
            self.parsed[topic] = result
        return result
