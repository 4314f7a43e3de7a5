"""Outcome checks for the simulator (``python -m load.sim --check``).

What each car did is written down by the simulator in a `CarRecord` (its grants, its answers to
FoD commands, the privacy setting of every telemetry envelope, whether it ended online, where
it ended). After the day, `run_checks` asks the gateway through its public gRPC APIs only
(EntitlementService, VehicleService, ExplainService, and a TelemetryService subscription that
ran during the day) and lists every mismatch in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import tomllib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from gateway._gen.telematics.v1 import (
    common_pb2,
    explain_pb2,
    explain_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway._gen.telematics.v1 import entitlements_pb2 as ent
from gateway._gen.telematics.v1 import entitlements_pb2_grpc as ent_grpc
from gateway.api.client import aio_channel

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

SERVICE_PRODUCT = "remote-services"
FOD_PRODUCT = "sport-chrono"
EV = ent.EntitlementEventKind


@dataclass(slots=True)
class GrantRecord:
    product_id: str
    kind: int  # telematics.v1.EntitlementKind
    order_id: str
    fails_first: bool = False  # FoD: the car answers the first unlock with a failure
    entitlement_id: str = ""  # set once Grant answered

    @property
    def is_fod(self) -> bool:
        return self.kind in (ent.ENTITLEMENT_KIND_FOD_UNLIMITED, ent.ENTITLEMENT_KIND_FOD_MONTHLY)


@dataclass(frozen=True, slots=True)
class Sent:
    """One telemetry envelope as the car sent it: its service and privacy setting."""

    service: str
    privacy_mode: int
    privacy_services: tuple[str, ...]
    with_location: bool

    @property
    def withheld(self) -> bool:
        """R22 as the car asked for it: the location of every service privacy covers is withheld."""
        if self.privacy_mode == common_pb2.PRIVACY_MODE_ALL_SERVICES:
            return True
        per_service = self.privacy_mode == common_pb2.PRIVACY_MODE_PER_SERVICE
        return per_service and self.service in self.privacy_services


@dataclass(slots=True)
class CarRecord:
    vin: str
    model: str
    model_year: int
    owner: str
    grants: list[GrantRecord] = field(default_factory=list)
    telemetry: dict[int, Sent] = field(default_factory=dict)  # sequence -> what was sent
    fod_failures: Counter[str] = field(default_factory=Counter)  # entitlement id -> failures answered
    fod_successes: Counter[str] = field(default_factory=Counter)
    acked: set[str] = field(default_factory=set)  # entitlement ids the car acked in a set
    ended_online: bool | None = None  # None: the car never got to the end of its day
    abroad_roaming_off: str = ""  # the visited country when the car ended abroad, roaming off
    bearer: int = 0

    def settled(self) -> bool:
        """Every granted service acked, every FoD unlocked (success answered)."""
        for g in self.grants:
            if not g.entitlement_id:
                return False
            if g.is_fod and not self.fod_successes[g.entitlement_id]:
                return False
            if not g.is_fod and g.entitlement_id not in self.acked:
                return False
        return True


@dataclass(slots=True)
class CheckResult:
    cars: int = 0
    services_granted: int = 0
    services_active: int = 0
    fods_granted: int = 0
    fods_unlocked: int = 0
    billable_events: int = 0
    billable_on_services: int = 0
    fod_failures_answered: int = 0
    failed_events: int = 0
    entitlement_events: int = 0
    telemetry_envelopes_sent: int = 0
    telemetry_envelopes_seen: int = 0
    records_checked: int = 0
    records_withheld_expected: int = 0
    records_withheld_seen: int = 0
    presence_expected_online: int = 0
    presence_expected_offline: int = 0
    presence_matched: int = 0
    explained: int = 0
    roaming_cars: int = 0
    roaming_menu_named: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def miss(self, message: str) -> None:
        self.mismatches.append(message)

    def as_dict(self, limit: int = 50) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["mismatch_count"] = len(self.mismatches)
        out["mismatches"] = self.mismatches[:limit]
        return out


# -- setup through the API ---------------------------------------------------------------------


async def set_owner(stub: ent_grpc.EntitlementServiceStub, record: CarRecord) -> None:
    await stub.SetVehicleOwner(ent.SetVehicleOwnerRequest(vin=record.vin, owner=record.owner))


async def grant(stub: ent_grpc.EntitlementServiceStub, record: CarRecord, g: GrantRecord) -> None:
    e = await stub.Grant(ent.GrantRequest(
        order_id=g.order_id, vin=record.vin, product_id=g.product_id,
        kind=ent.EntitlementKind.ValueType(g.kind),
        purchaser=record.owner, purchaser_role=ent.PURCHASER_ROLE_OWNER))
    g.entitlement_id = e.entitlement_id


class TelemetryTap:
    """A SubscribeTelemetry consumer for the whole day: every record, kept in memory."""

    def __init__(self, target: str, token: str = "") -> None:
        self.target = target
        self.token = token
        self.records: list[telemetry_pb2.TelemetryRecord] = []
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self.error = ""

    async def start(self) -> None:
        self._channel = aio_channel(self.target, self.token or None)
        stub = telemetry_pb2_grpc.TelemetryServiceStub(self._channel)
        call = stub.SubscribeTelemetry(telemetry_pb2.SubscribeTelemetryRequest())
        self._task = asyncio.create_task(self._read(call))
        # The server sends no headers before the first batch: give the subscription a moment
        # (the cars sleep through the first hours of the day anyway).
        await asyncio.sleep(0.5)
        if self.error:
            raise RuntimeError(f"SubscribeTelemetry: {self.error}")

    async def _read(self, call: Any) -> None:
        try:
            async for batch in call:
                self.records.extend(batch.records)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                self.error = f"{exc.code().name} {exc.details()}"

    async def stop(self, drain_s: float = 1.0) -> None:
        await asyncio.sleep(drain_s)  # records still in flight
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()


# -- the checks --------------------------------------------------------------------------------


async def poll(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float) -> T:
    """The last answer of `probe`: as soon as `done` holds, or when `timeout` is over."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if done(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.2)


def roaming_menu(model: str, model_year: int) -> str:
    """The head-unit roaming menu path of a model year (English), from sim_profiles/."""
    for path in sorted((ROOT / "sim_profiles").glob("*.toml")):
        p = tomllib.loads(path.read_text())
        if p.get("model") != model or model_year < p.get("model_year_from", 0):
            continue
        if model_year > p.get("model_year_to", 9999):
            continue
        return str(p.get("menus", {}).get("roaming", {}).get("en", ""))
    return ""


async def run_checks(
    target: str,
    records: list[CarRecord],
    telemetry: list[telemetry_pb2.TelemetryRecord],
    *,
    token: str = "",
    timeout: float = 15.0,
) -> CheckResult:
    r = CheckResult(cars=len(records))
    async with aio_channel(target, token or None) as ch:
        await _check_entitlements(r, ent_grpc.EntitlementServiceStub(ch), records, timeout)
        await _check_presence(r, vehicles_pb2_grpc.VehicleServiceStub(ch), records, timeout)
        await _check_explain(r, explain_pb2_grpc.ExplainServiceStub(ch), records)
    _check_privacy(r, records, telemetry)
    return r


def _state_name(state: int) -> str:
    return ent.EntitlementState.Name(ent.EntitlementState.ValueType(state))


async def _check_entitlements(
    r: CheckResult, stub: ent_grpc.EntitlementServiceStub, records: list[CarRecord], timeout: float
) -> None:
    expected: dict[str, tuple[CarRecord, GrantRecord]] = {}
    for rec in records:
        for g in rec.grants:
            if g.is_fod:
                r.fods_granted += 1
            else:
                r.services_granted += 1
            if not g.entitlement_id:
                r.miss(f"{rec.vin}: grant {g.order_id} ({g.product_id}) never answered")
                continue
            expected[g.entitlement_id] = (rec, g)
            r.fod_failures_answered += rec.fod_failures[g.entitlement_id]

    def want(g: GrantRecord) -> int:
        return ent.ENTITLEMENT_STATE_UNLOCKED if g.is_fod else ent.ENTITLEMENT_STATE_ACTIVE

    async def listed(rec: CarRecord) -> dict[str, ent.Entitlement]:
        resp = await stub.ListEntitlements(ent.ListEntitlementsRequest(vin=rec.vin, include_ended=True))
        return {e.entitlement_id: e for e in resp.entitlements}

    for rec in records:
        def settled(found: dict[str, ent.Entitlement], rec: CarRecord = rec) -> bool:
            return all(g.entitlement_id in found and found[g.entitlement_id].state == want(g)
                       for g in rec.grants if g.entitlement_id)

        try:
            found = await poll(functools.partial(listed, rec), settled, timeout)
        except grpc.aio.AioRpcError as exc:
            r.miss(f"{rec.vin}: ListEntitlements failed: {exc.code().name} {exc.details()}")
            continue
        for g in rec.grants:
            if not g.entitlement_id:
                continue
            e = found.get(g.entitlement_id)
            if e is None:
                r.miss(f"{rec.vin}: {g.product_id} {g.entitlement_id} missing from ListEntitlements")
                continue
            if e.state == want(g):
                if g.is_fod:
                    r.fods_unlocked += 1
                else:
                    r.services_active += 1
                continue
            what = (f"failures answered {rec.fod_failures[g.entitlement_id]}, successes "
                    f"{rec.fod_successes[g.entitlement_id]}" if g.is_fod else
                    f"car acked it: {g.entitlement_id in rec.acked}")
            r.miss(f"{rec.vin}: {g.product_id} {g.entitlement_id} is {_state_name(e.state)}, expected "
                   f"{_state_name(want(g))} ({what}; gateway failures={e.failures})")
        for eid, e in found.items():
            if eid not in expected:
                r.miss(f"{rec.vin}: unexpected entitlement {eid} ({e.product_id}, {_state_name(e.state)})")

    events = await _all_events(stub)
    r.entitlement_events = len(events)
    cursors = [ev.cursor for ev in events]
    if any(b <= a for a, b in itertools.pairwise(cursors)):
        r.miss("WatchEntitlementEvents: cursors not strictly increasing")
    kinds: dict[str, Counter[int]] = defaultdict(Counter)
    for ev in events:
        kinds[ev.entitlement_id][ev.kind] += 1
        if ev.entitlement_id not in expected:
            r.miss(f"{ev.vin}: event {EV.Name(ev.kind)} for an entitlement nobody granted: "
                   f"{ev.entitlement_id}")
    for eid, (rec, g) in expected.items():
        k = kinds[eid]
        label = f"{rec.vin}: {g.product_id} {eid}"
        if k[ent.ENTITLEMENT_EVENT_KIND_GRANTED] != 1:
            r.miss(f"{label}: {k[ent.ENTITLEMENT_EVENT_KIND_GRANTED]} GRANTED events, expected 1")
        billable = k[ent.ENTITLEMENT_EVENT_KIND_BILLABLE]
        if g.is_fod:
            r.billable_events += billable
            r.failed_events += k[ent.ENTITLEMENT_EVENT_KIND_FAILED]
            if billable != 1:
                r.miss(f"{label}: {billable} BILLABLE events, expected exactly 1 (R14)")
            if k[ent.ENTITLEMENT_EVENT_KIND_UNLOCKED] != 1:
                r.miss(f"{label}: {k[ent.ENTITLEMENT_EVENT_KIND_UNLOCKED]} UNLOCKED events, expected 1")
            if k[ent.ENTITLEMENT_EVENT_KIND_FAILED] != rec.fod_failures[eid]:
                r.miss(f"{label}: {k[ent.ENTITLEMENT_EVENT_KIND_FAILED]} FAILED events, but the car "
                       f"answered {rec.fod_failures[eid]} failures")
        else:
            r.billable_on_services += billable
            if billable:
                r.miss(f"{label}: {billable} BILLABLE events for a service (only FoD bill, R14)")
            for kind in (ent.ENTITLEMENT_EVENT_KIND_DELIVERED, ent.ENTITLEMENT_EVENT_KIND_ACTIVE):
                if k[kind] < 1:
                    r.miss(f"{label}: no {EV.Name(kind)} event")
            if k[ent.ENTITLEMENT_EVENT_KIND_ACTIVE] > 1:
                r.miss(f"{label}: {k[ent.ENTITLEMENT_EVENT_KIND_ACTIVE]} ACTIVE events, expected 1")


async def _all_events(
    stub: ent_grpc.EntitlementServiceStub, idle_s: float = 2.0
) -> list[ent.EntitlementEvent]:
    """Every event from cursor 0, read until the stream stays quiet for `idle_s`."""
    call = stub.WatchEntitlementEvents(ent.WatchEntitlementEventsRequest(after_cursor=0))
    events: list[ent.EntitlementEvent] = []
    try:
        while True:
            try:
                ev = await asyncio.wait_for(call.read(), idle_s)
            except TimeoutError:
                break
            if ev is grpc.aio.EOF:
                break
            events.append(ev)
    finally:
        call.cancel()
    return events


async def _check_presence(
    r: CheckResult, stub: vehicles_pb2_grpc.VehicleServiceStub, records: list[CarRecord], timeout: float
) -> None:
    for rec in records:
        if rec.ended_online is None:
            r.miss(f"{rec.vin}: the car did not finish its day (see errors)")
            continue
        want = vehicles_pb2.PRESENCE_ONLINE if rec.ended_online else vehicles_pb2.PRESENCE_OFFLINE
        if rec.ended_online:
            r.presence_expected_online += 1
        else:
            r.presence_expected_offline += 1

        async def get(rec: CarRecord = rec) -> vehicles_pb2.Vehicle | grpc.aio.AioRpcError:
            try:
                return await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=rec.vin))
            except grpc.aio.AioRpcError as exc:
                return exc

        def arrived(v: vehicles_pb2.Vehicle | grpc.aio.AioRpcError, want: int = want) -> bool:
            return isinstance(v, vehicles_pb2.Vehicle) and v.presence == want

        v = await poll(get, arrived, timeout)
        if isinstance(v, grpc.aio.AioRpcError):
            r.miss(f"{rec.vin}: GetVehicle failed: {v.code().name} {v.details()}")
            continue
        last = "stayed online" if rec.ended_online else "said goodbye and disconnected"
        if v.presence != want:
            r.miss(f"{rec.vin}: presence {vehicles_pb2.Presence.Name(v.presence)}, but the car {last} "
                   f"(offline reason {vehicles_pb2.OfflineReason.Name(v.offline_reason)})")
        elif not rec.ended_online and v.offline_reason != vehicles_pb2.OFFLINE_REASON_GOODBYE:
            r.miss(f"{rec.vin}: offline for {vehicles_pb2.OfflineReason.Name(v.offline_reason)}, but the "
                   f"car {last}")
        else:
            r.presence_matched += 1


async def _check_explain(
    r: CheckResult, stub: explain_pb2_grpc.ExplainServiceStub, records: list[CarRecord]
) -> None:
    for rec in records:
        try:
            resp = await stub.Explain(explain_pb2.ExplainRequest(vin=rec.vin, language="en"))
        except grpc.aio.AioRpcError as exc:
            r.miss(f"{rec.vin}: Explain failed: {exc.code().name} {exc.details()}")
            continue
        if resp.vin != rec.vin or resp.model != rec.model or resp.model_year != rec.model_year:
            r.miss(f"{rec.vin}: Explain names {resp.vin} {resp.model} {resp.model_year}, expected "
                   f"{rec.model} {rec.model_year}")
            continue
        r.explained += 1
        if not rec.abroad_roaming_off:
            continue
        r.roaming_cars += 1
        menu = roaming_menu(rec.model, rec.model_year)
        roaming = [d for d in resp.decisions if d.reason == "roaming_disabled"]
        if resp.visited_country != rec.abroad_roaming_off:
            r.miss(f"{rec.vin}: Explain says visited country {resp.visited_country!r}, the car is in "
                   f"{rec.abroad_roaming_off}")
        elif not roaming:
            r.miss(f"{rec.vin}: abroad in {rec.abroad_roaming_off} on an inserted SIM with roaming off, but "
                   f"Explain gives no roaming_disabled decision: {[d.reason for d in resp.decisions]}")
        elif not menu or not all(menu in d.next_step for d in roaming):
            r.miss(f"{rec.vin}: roaming_disabled next_step does not name the roaming menu {menu!r}: "
                   f"{roaming[0].next_step!r}")
        else:
            r.roaming_menu_named += 1


def _check_privacy(
    r: CheckResult, records: list[CarRecord], telemetry: list[telemetry_pb2.TelemetryRecord]
) -> None:
    by_vin = {rec.vin: rec for rec in records}
    seen: set[tuple[str, int]] = set()
    r.telemetry_envelopes_sent = sum(len(rec.telemetry) for rec in records)
    for t in telemetry:
        car = by_vin.get(t.vin)
        sent = car.telemetry.get(t.sequence) if car is not None else None
        if sent is None:
            r.miss(f"{t.vin}: telemetry record for sequence {t.sequence}, which the simulator never sent")
            continue
        seen.add((t.vin, t.sequence))
        r.records_checked += 1
        has_location = t.sample.HasField("location")
        setting = common_pb2.PrivacyMode.Name(common_pb2.PrivacyMode.ValueType(sent.privacy_mode))
        if sent.privacy_services:
            setting += f" {list(sent.privacy_services)}"
        where = f"{t.vin} seq {t.sequence} ({t.service}, privacy {setting})"
        if t.service != sent.service:
            r.miss(f"{where}: record says service {t.service!r}, the car sent {sent.service!r}")
        if sent.withheld:
            r.records_withheld_expected += 1
            if has_location:
                r.miss(f"{where}: location delivered although the car withheld it (R22)")
            elif not t.location_withheld:
                r.miss(f"{where}: location removed but location_withheld is false")
            else:
                r.records_withheld_seen += 1
        elif sent.with_location and (not has_location or t.location_withheld):
            r.miss(f"{where}: location withheld although privacy does not cover {sent.service}")
    r.telemetry_envelopes_seen = len(seen)
