"""Bounded exponential backoff for retrying work against a dependency that is down."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays initial_s, 2 x initial_s, ... up to max_s, then max_s for ever.

    Bounded above so recovery is noticed within max_s of the dependency's return; no jitter:
    one gateway retries one batch at a time, there is no herd of its own to spread.
    """

    initial_s: float = 0.1
    max_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.max_s, delay * 2)
