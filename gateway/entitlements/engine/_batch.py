"""What one engine step changes under its lock, written in one ledger transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway._gen.telematics.v1 import downlink_pb2
from gateway.entitlements.domain.types import Entitlement, LifecycleEvent
from gateway.entitlements.ledger.base import CommandRecord, SetMark, SetRecord


@dataclass(slots=True)
class Batch:
    """Changes made under the lock, written in one ledger transaction by the engine's `_commit`.

    `downlinks` are the FoD commands to publish once the batch is committed (never before: a
    command the ledger does not know could not be matched to the car's answer).
    """

    changed: dict[str, Entitlement] = field(default_factory=dict)
    events: list[LifecycleEvent] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    sets: list[SetRecord] = field(default_factory=list)
    published: list[SetMark] = field(default_factory=list)
    acked: list[SetMark] = field(default_factory=list)
    downlinks: list[tuple[CommandRecord, downlink_pb2.Downlink]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.changed or self.events or self.commands or self.sets or self.published or self.acked)
