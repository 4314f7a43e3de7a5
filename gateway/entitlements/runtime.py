"""The engine's vehicle side and clock side: applies what cars say, runs time-driven work, and
publishes downlinks. `engine.EntitlementEngine` adds the backend API on top.

Every change is written with its outbox events in one ledger transaction before anyone is told
(the pipeline acknowledges the car's message only after `on_vehicle_batch` returned). Downlinks
go out after that, never while the lock is held: a publish waits for the broker, whose
connection is the one the pipeline reads from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from gateway import topics
from gateway._gen.telematics.v1 import downlink_pb2, uplink_pb2
from gateway.clock import Clock
from gateway.entitlements import delivery, wire
from gateway.entitlements.eligibility import EligibilityPolicy, IdleTimer, RetryPolicy
from gateway.entitlements.explain import generic_fod_retry_steps
from gateway.entitlements.ledger import CommandRecord, Ledger, LedgerError, OutboxEvent, SetMark, SetRecord
from gateway.entitlements.lifecycle import transition
from gateway.entitlements.live import LiveIndex
from gateway.entitlements.setbook import SetBook
from gateway.entitlements.types import (
    BootWhileOnline,
    Delivered,
    Entitlement,
    EntitlementState,
    FodAction,
    FodResult,
    FodWindowOpen,
    LifecycleEvent,
    LifecycleEventKind,
    TermEnded,
    TransitionError,
    Trigger,
)
from gateway.entitlements.vehicle import VehicleUpdate, default_link_good, is_online
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.session.hub import EventHub

log = logging.getLogger(__name__)

S = EntitlementState
K = LifecycleEventKind

DEFAULT_RETRY = RetryPolicy()


@dataclass(slots=True)
class Batch:
    """Changes made under the lock, written in one ledger transaction by `_commit`."""

    changed: dict[str, Entitlement] = field(default_factory=dict)
    events: list[LifecycleEvent] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    sets: list[SetRecord] = field(default_factory=list)
    published: list[SetMark] = field(default_factory=list)
    acked: list[SetMark] = field(default_factory=list)
    downlinks: list[tuple[CommandRecord, downlink_pb2.Downlink]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.changed or self.events or self.commands or self.sets or self.published or self.acked)


class EngineCore:
    def __init__(
        self,
        *,
        ledger: Ledger,
        clock: Clock,
        metrics: Metrics,
        publish: Callable[[str, bytes], Awaitable[None]],
        session_of: Callable[[str], VehicleSession | None],
        hub: EventHub,
        service_available: Callable[[VehicleSession, str], tuple[bool, str]] = lambda s, p: (True, ""),
        offered_for_model: Callable[[VehicleSession, str], tuple[bool, str]] = lambda s, p: (True, ""),
        fod_retry_steps: Callable[[VehicleSession, str], tuple[str, ...]] = generic_fod_retry_steps,
        link_good: Callable[[VehicleSession], bool] = default_link_good,
        idle_s: float = 600.0,
        ack_timeout_s: float = 600.0,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        """
        ledger: durable entitlements and outbox; the caller opens it before `start`.
        clock: every time decision; a ManualClock in tests.
        metrics: the gateway's metrics (entitlement gauge, latencies, retries, billing).
        publish: (topic, payload) QoS 1 to the car; may raise while the broker is down (a later
            tick tries again).
        session_of: the current VehicleSession of a VIN, None when never seen.
        hub: wakes WatchEntitlementEvents streams; a hub of its own (cursors are the outbox's).
        service_available: R12 hook, (session, product_id) -> (offered here, reason).
        offered_for_model: product catalogue hook, (session, product_id) -> (sold for the car's
            model and model year, reason). A grant accepted before the car's model was known
            stays undelivered when the model turns out not to be offered (explained as
            `not_offered_for_model`).
        fod_retry_steps: R18 hook, (session, lang) -> the driver's steps for the car's model.
        link_good: R17 "good data connection" (default: online and not on 2G, R20).
        idle_s: R17 wait with every precondition met before an FoD command (default 10 min).
        ack_timeout_s: an unanswered set or FoD command counts as lost after this long.
        retry: R18 backoff after a failed FoD command.
        """
        self._ledger = ledger
        self._clock = clock
        self._m = metrics
        self._publish = publish
        self._session_of = session_of
        self._hub = hub
        self._available = service_available
        self._offered_for_model = offered_for_model
        self._retry_steps = fod_retry_steps
        self._link_good = link_good
        self._ack_timeout_s = ack_timeout_s
        self._retry = retry
        self._idle = IdleTimer(policy=EligibilityPolicy(idle_s=idle_s))
        self._lock = asyncio.Lock()  # every read-modify-write of entitlements
        self._tick_lock = asyncio.Lock()  # ticks never overlap (their publishes run unlocked)
        self._wake = asyncio.Event()
        self._live = LiveIndex()
        self._sets = SetBook()
        self._commands: dict[str, CommandRecord] = {}  # latest FoD command per entitlement
        self._unsent: dict[str, downlink_pb2.Downlink] = {}  # command id -> FodCommand to retry
        self._fod_work: set[str] = set()  # VINs with an FoD waiting for an R17 window
        self._boot_at: dict[str, float] = {}  # latency metric: boot -> set published

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load live entitlements, set versions and the latest FoD commands from the ledger."""
        for e in await self._ledger.load_live():
            self._remember(e)
        self._sets.load(await self._ledger.load_sets())
        self._commands = {c.entitlement_id: c for c in await self._ledger.latest_commands()}
        self._update_gauge()
        log.info("entitlement engine: %d live entitlements loaded", len(self._live))

    async def run(self, tick_s: float = 1.0) -> None:
        """Call `tick` every `tick_s` seconds, and at once when something became due."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick_s)
            self._wake.clear()
            try:
                await self.tick()
            except LedgerError as exc:  # the database is down: no stack trace per tick
                log.warning("entitlement tick failed: %s; the next one tries again", exc)
            except Exception:
                log.exception("entitlement tick failed; the next one tries again")

    def now(self) -> float:
        return self._clock.now()

    # -- the vehicle side -----------------------------------------------------------------------

    async def on_vehicle_batch(self, updates: Sequence[VehicleUpdate]) -> None:
        """Apply what the cars said; durable when this returns, so call it before acknowledging
        the messages. Replays are harmless: boots, acks and results are idempotent."""
        if not updates:
            return
        async with self._lock:
            now = self._clock.now()
            batch = Batch()
            for u in updates:
                session = u.session
                if session.vin in self._fod_work:  # R17 waits are tracked only where needed
                    self._idle.observe(session, now, link_good=self._link_good(session))
                if u.entitlement_ack is not None:
                    await self._on_ack(batch, session.vin, u.entitlement_ack, now)
                if u.fod_result is not None:
                    await self._on_fod_result(batch, session.vin, u.fod_result, now)
                if u.booted_online and is_online(session):
                    self._on_boot(batch, session, now)
            changed = not batch.empty()
            await self._commit(batch)
        if changed:
            self._wake.set()  # a set or a command may be due now: the run loop ticks at once

    def _on_boot(self, batch: Batch, session: VehicleSession, now: float) -> None:
        vin = session.vin
        for e in delivery.services(self._view_vin(batch, vin)):
            if e.state is S.PENDING:
                ok, reason = self._offered_for_model(session, e.product_id)
                if not ok:  # never delivered to this model; Explain says so
                    log.info("%s for %s held back: %s", e.product_id, vin, reason)
                    continue
                ok, reason = self._available(session, e.product_id)
                if not ok:  # R12: waits for a boot in a country that offers it
                    # R22: the reason names no country while privacy withholds it (hooks.offered).
                    log.info("%s for %s held back: %s", e.product_id, vin, reason)
                    continue
            if e.state in (S.PENDING, S.DELIVERY_DUE, S.DELIVERED, S.REVOKE_PENDING):
                self._apply(batch, e, BootWhileOnline(), now)  # R13
                self._boot_at[vin] = now

    async def _on_ack(self, batch: Batch, vin: str, ack: uplink_pb2.EntitlementAck, now: float) -> None:
        version = ack.set_version
        ids = await self._set_ids(vin, version)
        if ids is None:
            log.warning("%s acked an unknown entitlement set version %d", vin, version)
            return
        installed = set(ack.entitlement_ids) if ack.entitlement_ids else set(ids)
        sets = self._sets.of(vin)
        for e, triggers in delivery.ack_triggers(self._view_vin(batch, vin), version, ids, installed, sets):
            for trigger in triggers:
                e = self._apply(batch, e, trigger, now)
        batch.acked.append(SetMark(vin, version, now))

    async def _set_ids(self, vin: str, version: int) -> tuple[str, ...] | None:
        ids = self._sets.recorded_ids(vin, version)
        return ids if ids is not None else await self._ledger.get_set(vin, version)

    async def _on_fod_result(self, batch: Batch, vin: str, result: uplink_pb2.FodResult, now: float) -> None:
        command = self._known_command(batch, result) or await self._ledger.get_command(result.command_id)
        eid = command.entitlement_id if command is not None else result.entitlement_id
        action = command.action if command is not None else wire.fod_action_from_proto(result.action)
        e = batch.changed.get(eid) or self._live.get(eid) or await self._ledger.get(eid)
        if e is None or action is None or e.vin != vin:  # R8: a car answers for its own only
            log.warning("%s: FoD result for unknown command %r / entitlement %r", vin, result.command_id, eid)
            return
        latest = self._commands.get(eid)
        superseded = command is not None and latest is not None and latest.command_id != command.command_id
        if superseded and not result.success:
            return  # the failure of a superseded command; the newer one is still out
        before = len(batch.events)
        self._apply(batch, e, FodResult(action, result.success, result.error), now)
        unlocked = any(ev.kind is K.UNLOCKED for ev in batch.events[before:])
        if command is not None and command.result_at is None:
            batch.commands.append(replace(command, result_at=now, success=result.success))
            if unlocked and command.eligible_at is not None:
                self._m.fod_unlock_seconds.observe(max(0.0, now - command.eligible_at))

    def _known_command(self, batch: Batch, result: uplink_pb2.FodResult) -> CommandRecord | None:
        """The command a result answers, from memory when it is recent (else the ledger has it)."""
        for c in batch.commands:
            if c.command_id == result.command_id:
                return c
        latest = self._commands.get(result.entitlement_id)
        return latest if latest is not None and latest.command_id == result.command_id else None

    # -- time-driven work -------------------------------------------------------------------------

    async def tick(self) -> None:
        """Term ends and renewals (R10), FoD windows and retries (R17, R18), entitlement sets
        (R13), unsent downlinks. Tests call it after moving a ManualClock."""
        async with self._tick_lock:
            async with self._lock:
                now = self._clock.now()
                await self._end_terms(now)  # first: an end may make a set or a command due
                for _ in self._sets.newly_overdue(now, self._ack_timeout_s):
                    self._m.entitlement_ack_timeouts.inc()  # R13: sent again with the next boot
                fod = Batch()
                self._open_fod_windows(fod, now)
                await self._commit(fod)
                sets = self._record_sets(now)
                await self._commit(sets)
            await self._send_commands([*fod.downlinks, *self._retry_unsent()])
            await self._send_sets(sets.sets)

    async def _end_terms(self, now: float) -> None:
        batch = Batch()
        due = self._live.due_terms(now)
        for e in due:
            self._apply(batch, e, TermEnded(), now)  # R10 renewal or end, R16 month end
        try:
            await self._commit(batch)
        except Exception:
            for e in due:
                self._live.reschedule(e)
            raise

    def _open_fod_windows(self, batch: Batch, now: float) -> None:
        for vin in sorted(self._fod_work):
            waiting = [e for e in self._live.of_vin(vin) if e.kind.is_fod and e.state in delivery.FOD_WORK]
            if not waiting:
                self._fod_work.discard(vin)
                self._idle.forget(vin)
                continue
            session = self._session_of(vin)
            if session is None:
                continue
            self._idle.observe(session, now, link_good=self._link_good(session))
            if not self._idle.is_eligible(vin, now):  # R17
                continue
            eligible_at = self._idle.eligible_at(vin)
            for e in waiting:
                unlock = delivery.fod_action(e) is FodAction.UNLOCK
                if unlock and not self._offered_for_model(session, e.product_id)[0]:
                    continue  # not sold for this model: never unlocked (Explain says so)
                last = self._commands.get(e.entitlement_id)
                due = delivery.command_due(
                    e, last, now, eligible_at=eligible_at, ack_timeout_s=self._ack_timeout_s,
                    policy=self._retry,
                )
                if not due:
                    continue
                action = delivery.fod_action(e)
                if e.failures > 0:
                    self._m.entitlement_retries.labels(action.value).inc()  # R18
                e = self._apply(batch, e, FodWindowOpen(), now)
                command = CommandRecord(str(uuid.uuid4()), e.entitlement_id, vin, action, now, eligible_at)
                batch.commands.append(command)
                batch.downlinks.append((command, wire.fod_command(vin, command.command_id, e, action, now)))

    def _record_sets(self, now: float) -> Batch:
        batch = Batch()
        for vin in self._sets.candidates():
            entitlements = self._live.of_vin(vin)
            if not delivery.needs_set(entitlements, self._sets.of(vin), forced=self._sets.is_forced(vin)):
                self._sets.settled(vin)
                continue
            session = self._session_of(vin)
            if session is None or not is_online(session):
                continue
            ids = tuple(e.entitlement_id for e in delivery.set_members(entitlements))
            batch.sets.append(SetRecord(vin, self._sets.next_version(vin), ids, now))  # before sending
        return batch

    async def _send_commands(self, downlinks: Iterable[tuple[CommandRecord, downlink_pb2.Downlink]]) -> None:
        for command, downlink in downlinks:
            if await self._send(command.vin, downlink, "fod_command"):
                self._unsent.pop(command.command_id, None)
            else:
                self._unsent[command.command_id] = downlink

    def _retry_unsent(self) -> list[tuple[CommandRecord, downlink_pb2.Downlink]]:
        out = []
        for command_id, downlink in list(self._unsent.items()):
            latest = self._commands.get(downlink.fod_command.entitlement_id)
            if latest is None or latest.command_id != command_id or latest.result_at is not None:
                del self._unsent[command_id]  # superseded or answered
                continue
            out.append((latest, downlink))
        return out

    async def _send_sets(self, records: Sequence[SetRecord]) -> None:
        sent: list[SetRecord] = []
        for record in records:
            members = [e for e in self._live.of_vin(record.vin) if e.entitlement_id in record.entitlement_ids]
            downlink = wire.entitlement_set(record.vin, record.version, members, self._clock.now())
            if await self._send(record.vin, downlink, "set"):
                sent.append(record)
        if not sent:
            return
        async with self._lock:
            now = self._clock.now()
            batch = Batch()
            for record in sent:
                for e in self._view_vin(batch, record.vin):
                    if e.state is S.DELIVERY_DUE and e.entitlement_id in record.entitlement_ids:
                        self._apply(batch, e, Delivered(), now)
                batch.published.append(SetMark(record.vin, record.version, now))
                boot = self._boot_at.pop(record.vin, None)
                if boot is not None:
                    self._m.entitlement_delivery_seconds.observe(max(0.0, now - boot))
            await self._commit(batch)

    async def _send(self, vin: str, downlink: downlink_pb2.Downlink, kind: str) -> bool:
        try:
            await self._publish(topics.downlink(vin), downlink.SerializeToString())
        except Exception as exc:  # broker down or refused: a later tick tries again
            log.warning("publishing %s to %s failed: %s", kind, vin, exc)
            self._m.entitlement_downlinks.labels(kind, "error").inc()
            return False
        self._m.entitlement_downlinks.labels(kind, "ok").inc()
        return True

    # -- shared machinery -------------------------------------------------------------------------

    def _view_vin(self, batch: Batch, vin: str) -> list[Entitlement]:
        """The VIN's live entitlements as the batch has changed them so far."""
        return [batch.changed.get(e.entitlement_id, e) for e in self._live.of_vin(vin)]

    def _apply(self, batch: Batch, e: Entitlement, trigger: Trigger, now: float) -> Entitlement:
        """One transition into the batch. An illegal trigger (a confused car) is logged and
        ignored; CancelRefused goes back to the caller."""
        e = batch.changed.get(e.entitlement_id, e)
        try:
            new, events = transition(e, trigger, now)
        except TransitionError as exc:
            log.warning("%s: %s", e.vin, exc)
            return e
        if events or new is not e:
            batch.changed[new.entitlement_id] = new
            batch.events.extend(events)
        return new

    async def _commit(self, batch: Batch) -> None:
        """Write the batch in one transaction; only then update memory, metrics and the hub."""
        if batch.empty():
            return
        written = await self._ledger.save(
            list(batch.changed.values()),
            wire.outbox_events(batch.events),
            commands=batch.commands,
            sets=batch.sets,
            published=batch.published,
            acked=batch.acked,
        )
        for e in batch.changed.values():
            self._remember(e)
        for ev in batch.events:
            changed = batch.changed.get(ev.entitlement_id)
            if ev.kind is K.REVOKE_DUE and changed is not None and not changed.kind.is_fod:
                self._sets.want(ev.vin, forced=True)  # a boot while a service ends: send again
        for c in batch.commands:
            self._commands[c.entitlement_id] = c
        self._sets.committed(batch.sets, batch.published, batch.acked)
        self._written(written)

    def _remember(self, e: Entitlement) -> None:
        self._live.put(e)
        if e.kind.is_fod:
            if e.state in delivery.FOD_WORK:
                self._fod_work.add(e.vin)
        elif e.state in delivery.SET_WORK:
            self._sets.want(e.vin)

    def _written(self, written: Sequence[OutboxEvent]) -> None:
        for w in written:
            self._m.entitlement_events.labels(w.kind).inc()
            if w.kind == K.BILLABLE.value:
                self._m.entitlement_billable.inc()  # R14
        if written:
            self._hub.notify(written[-1].cursor)
        self._update_gauge()

    def _update_gauge(self) -> None:
        for state in S:
            if state is not S.REVOKED:
                self._m.entitlements.labels(state.value).set(self._live.state_counts[state])
