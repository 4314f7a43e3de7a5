"""A test bench for the entitlement engine: a real SqliteLedger in tmp_path, a ManualClock, fake
cars whose sessions the tests change, and a fake publish that records every downlink."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway._gen.telematics.v1 import downlink_pb2, entitlements_pb2, uplink_pb2
from gateway.clock import ManualClock
from gateway.entitlements import EntitlementKind, GrantRequest, PurchaserRole
from gateway.entitlements.engine import EntitlementEngine, VehicleUpdate
from gateway.entitlements.ledger.sqlite import SqliteLedger
from gateway.metrics import Metrics
from gateway.model import (
    ChargingPlug,
    LockState,
    PowerState,
    Presence,
    Privacy,
    PrivacyMode,
    VehicleSession,
    VehicleState,
)
from gateway.session.hub import EventHub

VIN = "WP0ZZZ99ZTS392124"
VIN2 = "WP0ZZZ99ZTS392125"
OWNER = "owner@example.com"


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def order(kind: EntitlementKind = EntitlementKind.SERVICE, **changes: Any) -> GrantRequest:
    base = GrantRequest(
        order_id="order-1",
        vin=VIN,
        product_id="fod.matrix_led" if kind.is_fod else "svc.remote_services",
        kind=kind,
        purchaser=OWNER,
        purchaser_role=PurchaserRole.OWNER,
        booked_at=at(2026, 3, 1, 10),
    )
    return replace(base, **changes)


class Bench:
    def __init__(self, path: Path, clock: ManualClock, **engine_kw: Any) -> None:
        self.path = path
        self.clock = clock
        self.engine_kw = engine_kw
        self.published: list[tuple[str, downlink_pb2.Downlink]] = []
        self.sessions: dict[str, VehicleSession] = {}
        self.broker_down = False
        # Called with each downlink before publish returns (a car answering at once).
        self.on_publish: Callable[[downlink_pb2.Downlink], Awaitable[None]] | None = None
        self.metrics = Metrics()
        self.hub = EventHub()
        self.ledger = SqliteLedger(path=path)
        self.engine = self._engine()

    def _engine(self) -> EntitlementEngine:
        kw: dict[str, Any] = {"idle_s": 600.0, "ack_timeout_s": 600.0, **self.engine_kw}
        return EntitlementEngine(
            ledger=self.ledger,
            clock=self.clock,
            metrics=self.metrics,
            publish=self._publish,
            session_of=self.sessions.get,
            hub=self.hub,
            **kw,
        )

    async def _publish(self, topic: str, payload: bytes) -> None:
        if self.broker_down:
            raise ConnectionError("broker down")
        downlink = downlink_pb2.Downlink.FromString(payload)
        self.published.append((topic, downlink))
        if self.on_publish is not None:
            await self.on_publish(downlink)

    async def start(self) -> None:
        await self.ledger.open()
        await self.engine.start()

    async def restart(self) -> None:
        """A new engine over the same database file, as after a crash of the gateway."""
        await self.ledger.close()
        self.ledger = SqliteLedger(path=self.path)
        self.metrics = Metrics()
        self.engine = self._engine()
        await self.start()

    async def close(self) -> None:
        await self.ledger.close()

    # -- backend --
    async def grant(self, kind: EntitlementKind = EntitlementKind.SERVICE, **changes: Any) -> str:
        e = await self.engine.grant(order(kind, **changes))
        return e.entitlement_id

    async def state(self, entitlement_id: str) -> str:
        return (await self.engine.get(entitlement_id)).state.value

    async def outbox(self, vin: str = "") -> list[str]:
        names = entitlements_pb2.EntitlementEventKind.Name
        out = []
        for row in await self.ledger.read_events(0, 10_000, vin):
            ev = entitlements_pb2.EntitlementEvent.FromString(row.payload)
            out.append(names(ev.kind).removeprefix("ENTITLEMENT_EVENT_KIND_").lower())
        return out

    # -- cars --
    def car(self, vin: str = VIN) -> VehicleSession:
        if vin not in self.sessions:
            self.sessions[vin] = VehicleSession(vin=vin, visited_country="DE", home_country="DE")
        return self.sessions[vin]

    async def send(self, vin: str = VIN, **update: Any) -> None:
        await self.engine.on_vehicle_batch([VehicleUpdate(self.car(vin), **update)])

    async def boot(self, vin: str = VIN, *, boot: bool = True, country: str = "DE") -> None:
        """A Hello: the car connected (and restarted, with boot=True)."""
        s = self.car(vin)
        now = self.clock.now()
        s.presence, s.presence_changed_at, s.visited_country = Presence.ONLINE, now, country
        s.connection_id += 1
        if boot:
            s.last_boot_at = now
        await self.send(vin, booted_online=boot)

    async def go_offline(self, vin: str = VIN) -> None:
        s = self.car(vin)
        s.presence, s.presence_changed_at = Presence.OFFLINE, self.clock.now()
        await self.send(vin)

    async def set_state(self, vin: str = VIN, **changes: Any) -> None:
        s = self.car(vin)
        s.state = replace(s.state, **changes)
        await self.send(vin)

    async def privacy(self, on: bool, vin: str = VIN) -> None:
        s = self.car(vin)
        s.privacy = Privacy(PrivacyMode.ALL_SERVICES if on else PrivacyMode.OFF)
        await self.send(vin)

    async def park(self, vin: str = VIN) -> None:
        """Online, unplugged, switched off, locked: every R17 precondition (the wait starts)."""
        if self.car(vin).presence is not Presence.ONLINE:
            await self.boot(vin, boot=False)
        s = self.car(vin)
        s.state = VehicleState(PowerState.OFF, LockState.LOCKED, ChargingPlug.DISCONNECTED)
        await self.send(vin)

    async def ack(self, version: int, vin: str = VIN, ids: tuple[str, ...] = ()) -> None:
        ack = uplink_pb2.EntitlementAck(set_version=version, entitlement_ids=list(ids))
        await self.send(vin, entitlement_ack=ack)

    async def fod_result(
        self, command: downlink_pb2.FodCommand, success: bool, error: str = "", vin: str = VIN
    ) -> None:
        result = uplink_pb2.FodResult(
            command_id=command.command_id,
            entitlement_id=command.entitlement_id,
            action=command.action,
            success=success,
            error=error,
        )
        await self.send(vin, fod_result=result)

    # -- what went to the cars --
    def sets(self, vin: str = VIN) -> list[downlink_pb2.EntitlementSet]:
        return [
            d.entitlement_set for _, d in self.published if d.vin == vin and d.HasField("entitlement_set")
        ]

    def commands(self, vin: str = VIN) -> list[downlink_pb2.FodCommand]:
        return [d.fod_command for _, d in self.published if d.vin == vin and d.HasField("fod_command")]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


def set_ids(s: downlink_pb2.EntitlementSet) -> list[str]:
    return [i.entitlement_id for i in s.items]


Factory = Callable[..., Bench]
