"""The typed batches that join the pipeline's stages (README "Architecture"):

    Sequence[Message] --decode--> Gated --session+rules--> Applied --sinks, durable--> ack

Each stage takes the previous one's batch and hands on its own; none reaches into another."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from gateway.decode import Decoded, DecodedWill
from gateway.egress.record import OutRecord
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.model import VehicleSession
from gateway.session.events import SessionEvent
from gateway.session.ratelimit import CarLimits


class Message(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def qos(self) -> int: ...  # 1: the broker waits for its acknowledgement (group commit)


@dataclass(slots=True)
class Gated:
    """The messages of a batch that passed the gate, and what the gate decided besides."""

    items: list[Decoded | DecodedWill]
    quarantined: list[str]  # cars quarantined by this batch
    released: list[str]     # cars whose quarantine ended
    limits: CarLimits | None  # the limits in force for this batch (None: none)
    hellos: bool = False  # a Hello among the items (else the Hello limit has nothing to judge)


@dataclass(slots=True)
class Applied:
    """What one application of a batch's messages produced: written and counted only once it
    committed (an application that conflicted is thrown away, see `Pipeline._apply_durably`)."""

    dirty: dict[str, VehicleSession] = field(default_factory=dict)
    events: list[tuple[SessionEvent, VehicleSession]] = field(default_factory=list)
    records: list[OutRecord] = field(default_factory=list)  # what privacy lets leave (R22)
    updates: list[VehicleUpdate] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)  # sequence_jump: judged by the session
    stale: Counter[str] = field(default_factory=Counter)
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    grace: Counter[str] = field(default_factory=Counter)  # gateway_presence_grace_total outcomes
    timeouts: int = 0
    withheld_records: int = 0
    withheld_signals: int = 0


class LogBudget:
    """At most 20 rejection log lines per 10 s: a flood of bad input must not flood the log."""

    def __init__(self) -> None:
        self._window = 0.0
        self._count = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._window > 10:
            self._window, self._count = now, 0
        self._count += 1
        return self._count <= 20
