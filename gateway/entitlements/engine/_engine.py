"""The entitlement engine: the pure lifecycle (domain/lifecycle.py) made durable in a Ledger,
driven by the backend API, by what cars say, and by time.

- Services (R12, R13): PENDING until a boot while online in a country where the service is
  offered, then a new complete EntitlementSet; ACTIVE when the car acks a version holding it.
- FoD (R14, R17, R18): a command in an R17 window (`domain.eligibility.fod_window`, which
  Explain reads too), one BILLABLE event with the car's first confirmed unlock, retries with
  backoff after a failure.
- Terms (R10, R15, R16): renewals and ends at their time; an end sends a set without the
  service, or an FoD revoke command under the same R17 preconditions.

Every change is written with its outbox events in one ledger transaction before anyone is told:
backend calls return only once their change is committed, and the pipeline acknowledges the
car's message only after `on_vehicle_batch` returned. Downlinks go out after that, never while
the lock is held: a publish waits for the broker, whose connection is the one the pipeline
reads from.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from gateway._gen.telematics.v1 import uplink_pb2
from gateway.clock import Clock
from gateway.entitlements import wire
from gateway.entitlements.domain.eligibility import (
    BlockerCode,
    EligibilityPolicy,
    FodWindow,
    IdleTimer,
    RetryPolicy,
    default_link_good,
    is_online,
)
from gateway.entitlements.domain.explain import (
    EntitlementBlocker,
    explain_fod,
    explain_service,
    generic_fod_retry_steps,
    not_offered_for_model,
)
from gateway.entitlements.domain.lifecycle import grant as grant_order
from gateway.entitlements.domain.lifecycle import transition
from gateway.entitlements.domain.terms import cancel_rule, stops_with_account
from gateway.entitlements.domain.types import (
    BootWhileOnline,
    Cancel,
    Delivered,
    Entitlement,
    EntitlementError,
    EntitlementState,
    FodAction,
    FodResult,
    FodWindowOpen,
    GrantRequest,
    LifecycleEventKind,
    Revoke,
    TermEnded,
    TransitionError,
    Trigger,
)
from gateway.entitlements.engine import _delivery as delivery
from gateway.entitlements.engine._batch import Batch
from gateway.entitlements.engine._downlinks import Downlinks
from gateway.entitlements.engine._follow import OutboxFollower, PeerLedger
from gateway.entitlements.engine._live import LiveIndex
from gateway.entitlements.engine._setbook import SetBook
from gateway.entitlements.engine._shares import CarShares
from gateway.entitlements.ledger.base import (
    CommandRecord,
    DuplicateOrder,
    Ledger,
    LedgerError,
    OutboxEvent,
    SetConflict,
    SetMark,
    SetRecord,
    VersionConflict,
)
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.session.hub import EventHub

log = logging.getLogger("gateway.entitlements.engine")

S = EntitlementState
K = LifecycleEventKind

DEFAULT_RETRY = RetryPolicy()
ACCOUNT_DELETED = "account_deleted"
# Sets of one tick awaiting their PUBACK at once. The broker's receive maximum (HiveMQ 10,
# EMQX 32, Mosquitto 20 by default, at most 65,535) is not reachable from here (`publish` is a plain
# callable), so a constant: Mqtt5Client.publish queues what exceeds the receive maximum, and
# 256 keeps that queue a few dozen round trips long (256 / 10 * 10 ms at HiveMQ) while a
# receive maximum up to 256 is used in full.
SETS_IN_FLIGHT = 256

Explained = tuple[Entitlement, list[EntitlementBlocker]]


class NotFound(EntitlementError):
    """No entitlement has that id."""


class EntitlementEngine:
    """See the module docstring. Sections: construction and the run loop, the backend API,
    Explain, the vehicle side, time-driven work, and the shared machinery they all commit
    through."""

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
        peers: PeerLedger | None = None,
        sets_in_flight: int = SETS_IN_FLIGHT,
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
        peers: the ledger again when other gateways share its database (PostgreSQL): each tick,
            and whenever `hub` is woken beyond what this engine has seen, the entitlements they
            changed are read again (engine/_follow.py). None (SQLite): no other writer.
        sets_in_flight: entitlement sets awaiting their PUBACK at once (SETS_IN_FLIGHT).
        """
        self._ledger = ledger
        self._clock = clock
        self._m = metrics
        self._downlinks = Downlinks(publish=publish, metrics=metrics)
        self._session_of = session_of
        self._hub = hub
        self._available = service_available
        self._offered_for_model = offered_for_model
        self._retry_steps = fod_retry_steps
        self._link_good = link_good
        self._ack_timeout_s = ack_timeout_s
        self._retry = retry
        if sets_in_flight < 1:
            raise ValueError(f"sets_in_flight must be at least 1, not {sets_in_flight}")
        self._sets_in_flight = sets_in_flight
        self._idle = IdleTimer(policy=EligibilityPolicy(idle_s=idle_s))
        self._lock = asyncio.Lock()  # every read-modify-write of entitlements
        self._tick_lock = asyncio.Lock()  # ticks never overlap (their publishes run unlocked)
        self._wake = asyncio.Event()
        self._live = LiveIndex()
        self._sets = SetBook()
        self._commands: dict[str, CommandRecord] = {}  # latest FoD command per entitlement
        self._fod_work: set[str] = set()  # VINs with an FoD waiting for an R17 window
        self._boot_at: dict[str, float] = {}  # latency metric: boot -> set published
        self._follower = OutboxFollower(peers) if peers is not None else None
        # Several gateways on one database: the cars whose time-driven work is this one's
        # (engine/_shares.py). None: every car (SQLite, or no ingest slots).
        self.shares: CarShares | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load live entitlements, set versions and the latest FoD commands from the ledger."""
        if self._follower is not None:
            await self._follower.start()  # first: what commits during the load is read again
        for e in await self._ledger.load_live():
            self._remember(e)
        self._sets.load(await self._ledger.load_sets())
        self._commands = {c.entitlement_id: c for c in await self._ledger.latest_commands()}
        self._update_gauge()
        log.info("entitlement engine: %d live entitlements loaded", len(self._live))

    async def run(self, tick_s: float = 1.0) -> None:
        """Call `tick` every `tick_s` seconds, and at once when something became due."""
        while True:
            await self._wait(tick_s)
            self._wake.clear()
            try:
                await self.tick()
            except LedgerError as exc:  # the database is down: no stack trace per tick
                log.warning("entitlement tick failed: %s; the next one tries again", exc)
                # A full tick before the next try: a wake-up that is still pending (another
                # gateway's commit this one could not follow yet) must not make this spin.
                await asyncio.sleep(tick_s)
            except Exception:
                log.exception("entitlement tick failed; the next one tries again")
                await asyncio.sleep(tick_s)

    async def _wait(self, tick_s: float) -> None:
        """Until `tick_s` passed, work became due, or (shared database) another gateway committed
        entitlement events beyond those this engine has seen (NOTIFY wakes `hub`)."""
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._wake.wait())]
        follower = self._follower
        if follower is not None and not self._hub.closed:  # a closed hub returns at once
            waits.append(asyncio.ensure_future(self._hub.wait_beyond(follower.cursor)))
        try:
            await asyncio.wait(waits, timeout=tick_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def now(self) -> float:
        return self._clock.now()

    # -- backend API ------------------------------------------------------------------------------

    async def grant(
        self,
        request: GrantRequest,
        *,
        booked_at_given: bool = True,
        check: Callable[[GrantRequest, VehicleSession | None], None] | None = None,
    ) -> Entitlement:
        """Grant an order, idempotently by order id (R3, R8). Durable when it returns.

        booked_at_given=False: the caller defaulted `booked_at` to now; a retry of a known order
        then takes the stored booking time instead of conflicting with it.
        check: validates a new order against the product catalogue with the car's current
            session (offer.check_grant); not called for a retry of a known order, so a retry
            still returns the entitlement granted first.
        Raises InvalidGrant, PermissionRefused (R3), OrderConflict, or what `check` raises.
        """
        async with self._lock:
            existing = self._live.by_order(request.order_id)
            if existing is None:
                existing = await self._ledger.find_by_order(request.order_id)
                if existing is not None:  # granted on another gateway: this view has it now
                    self._remember(existing)
            if existing is not None and not booked_at_given:
                request = replace(request, booked_at=existing.booked_at)
            if existing is None and check is not None:
                check(request, self._session_of(request.vin))
            is_owner = existing is None and await self._ledger.get_owner(request.vin) == request.purchaser
            e, events = grant_order(request, self._clock.now(), is_owner=is_owner, existing=existing)
            if not events:
                return e
            try:
                written = await self._ledger.create(e, wire.outbox_events(events))
            except DuplicateOrder:
                # Another gateway instance granted it between our read and write.
                stored = await self._ledger.find_by_order(request.order_id)
                if stored is None:
                    raise
                return grant_order(request, self._clock.now(), is_owner=True, existing=stored)[0]
            self._remember(e)
            self._written(written)
        self._wake.set()
        return e

    async def cancel(
        self, entitlement_id: str, notice_s: float = 0.0
    ) -> tuple[Entitlement, float | None, str]:
        """Customer cancellation or withdrawal (R10, R15, R16): (entitlement, effective end, rule).
        A second cancel returns the first one's end. Raises NotFound or CancelRefused."""
        async with self._lock:
            e = await self._find(entitlement_id)
            batch = Batch()
            e = self._apply(batch, e, Cancel(notice_s=notice_s), self._clock.now())
            await self._commit(batch)
        self._wake.set()
        return e, e.effective_end, cancel_rule(e.kind)

    async def revoke(self, entitlement_id: str, reason: str) -> Entitlement:
        """End it now whatever the terms; the car drops it (a set without it, or an FoD revoke)."""
        async with self._lock:
            e = await self._find(entitlement_id)
            batch = Batch()
            e = self._apply(batch, e, Revoke(reason or "revoked"), self._clock.now())
            await self._commit(batch)
        self._wake.set()
        return e

    async def get(self, entitlement_id: str) -> Entitlement:
        return self._live.get(entitlement_id) or await self._find(entitlement_id)

    async def set_owner(self, vin: str, owner: str) -> None:
        """R3: the primary user, the only one who may buy for the vehicle. A sale changes it;
        entitlements stay with the vehicle (R8)."""
        await self._ledger.set_owner(vin, owner)

    async def delete_account(self, account: str) -> list[str]:
        """R4: stop delivery for the account's vehicles (see `stops_with_account`), then unlink
        them. Returns their VINs. Idempotent: a retry after a crash finishes the job.

        Entitlements the account bought for vehicles it no longer owns stay with those vehicles
        (R8: on a sale, the new holder keeps the remaining term).
        """
        async with self._lock:
            vins = await self._ledger.owned_vins(account)
            batch = Batch()
            for vin in vins:
                for e in self._view_vin(batch, vin):
                    if stops_with_account(e):
                        self._apply(batch, e, Revoke(ACCOUNT_DELETED), self._clock.now())
            await self._commit(batch)
            deleted = await self._ledger.delete_account(account, self._clock.now())
        self._wake.set()
        return deleted

    # -- explain ----------------------------------------------------------------------------------

    def explain(
        self, vin: str, lang: str, session: VehicleSession | None = None
    ) -> list[Explained]:
        """Why each entitlement of the VIN that is not in the car yet (or still has to leave it)
        is held back, with the driver's next step in `lang` ("en" or "de"). An empty blocker
        list means it is on its way. session: the car as the caller read it (the store, with
        several gateways); this gateway's own session of it when None."""
        now = self._clock.now()
        if session is None:
            session = self._session_of(vin)
        out: list[Explained] = []
        for e in self._live.of_vin(vin):
            if e.state in (S.ACTIVE, S.UNLOCKED):
                continue
            if not e.kind.is_fod:
                available = self._available(session, e.product_id) if session is not None else (True, "")
                blockers = explain_service(
                    e, session, available=available, ack_overdue=self._sets.is_overdue(vin), lang=lang
                )
            else:
                window = self._fod_window(vin, session, now)  # R17: what `_open_fod_windows` acts on
                blockers = explain_fod(
                    e,
                    window,
                    now=now,
                    retry_at=delivery.retry_at(e, window.eligible_at, self._retry),
                    retry_steps=self._retry_steps(session, lang) if session is not None else (),
                    lang=lang,
                )
            if session is not None and _waits_for_delivery(e):
                offered, _reason = self._offered_for_model(session, e.product_id)
                if not offered:
                    blockers.insert(0, not_offered_for_model(e, session, lang))
            out.append((e, blockers))
        return out

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
                if u.entitlement_ack is not None or u.fod_result is not None:
                    await self._read_again(session.vin)
                if u.entitlement_ack is not None:
                    await self._on_ack(batch, session.vin, u.entitlement_ack, now)
                if u.fod_result is not None:
                    await self._on_fod_result(batch, session.vin, u.fod_result, now)
                if u.booted_online and is_online(session):
                    await self._read_car(session.vin)
                    self._on_boot(batch, session, now)
            changed = not batch.empty()
            await self._commit(batch)
        if changed:
            self._wake.set()  # a set or a command may be due now: the run loop ticks at once

    async def _read_again(self, vin: str) -> None:
        """Shared database: the car's entitlements as stored, before its ack or FoD result is
        judged. The set or command it answers may be another gateway's, and not every change
        behind one reaches the follower (opening an FoD window writes no outbox event): judged
        on a stale view, a result for an FoD still pending here is an illegal transition and
        dropped, though the car never sends it again. Rare messages: one read each."""
        if self._follower is None:
            return
        ids = [e.entitlement_id for e in self._live.of_vin(vin)]
        if ids:
            for e in await self._ledger.refresh(ids):
                self._remember(e)

    async def _read_car(self, vin: str) -> None:
        """Shared database: every live entitlement of the car as stored, before its boot is
        judged (R13). One granted on another gateway a moment ago may not have reached this
        view yet (its NOTIFY is followed asynchronously); a boot that missed it would leave it
        PENDING until the car's next restart. Boots are rare: one read each."""
        if self._follower is None:
            return
        for e in await self._ledger.list(vin, include_ended=False):
            self._remember(e)

    def _on_boot(self, batch: Batch, session: VehicleSession, now: float) -> None:
        vin = session.vin
        for e in delivery.services(self._view_vin(batch, vin)):
            if e.state is S.PENDING:
                ok, reason = self._offered_for_model(session, e.product_id)
                if not ok:  # never delivered to this model; Explain says so
                    log.debug("%s for %s held back: %s", e.product_id, vin, reason,
                              extra={"event": "entitlement_held_back"})
                    continue
                ok, reason = self._available(session, e.product_id)
                if not ok:  # R12: waits for a boot in a country that offers it
                    # R22: the reason names no country while privacy withholds it (hooks.offered).
                    log.debug("%s for %s held back: %s", e.product_id, vin, reason,
                              extra={"event": "entitlement_held_back"})
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
            if self.shares is not None:
                await self.shares.refresh()
            async with self._lock:
                await self._follow()  # first: the work below starts from the others' writes
                now = self._clock.now()
                await self._end_terms(now)  # first: an end may make a set or a command due
                for vin in self._sets.newly_overdue(now, self._ack_timeout_s):
                    if self._mine(vin):
                        self._m.entitlement_ack_timeouts.inc()  # R13: sent again with the next boot
                fod = Batch()
                self._open_fod_windows(fod, now)
                await self._commit(fod)
                sets = self._record_sets(now)
                try:
                    await self._commit(sets)
                except SetConflict as exc:
                    # Another gateway took the version first (its sets are read again by now):
                    # nothing to send; the next tick, at once, records on top of it.
                    log.info("entitlement sets: %s; recording the next version", exc)
                    sets = Batch()
                    self._wake.set()
            unsent = [c for c in self._downlinks.unsent(self._commands) if self._mine(c[0].vin)]
            await self._downlinks.send_commands([*fod.downlinks, *unsent])
            await self._send_sets(sets.sets)
            self._update_delivery_backlog(self._clock.now())

    def _update_delivery_backlog(self, now: float) -> None:
        """gateway_entitlement_delivery_backlog_seconds: the oldest boot while online (R13) of an
        online car of this gateway whose set has not gone out yet; 0 when none waits. A car that
        went offline since its boot waits for the next one (R13), so it is no backlog."""
        oldest = now
        for vin, boot in self._boot_at.items():
            session = self._session_of(vin)
            if session is not None and is_online(session) and self._mine(vin) and self._sets.is_wanted(vin):
                oldest = min(oldest, boot)
        self._m.entitlement_delivery_backlog.set(max(0.0, now - oldest))

    async def _end_terms(self, now: float) -> None:
        batch = Batch()
        due = []
        for e in self._live.due_terms(now):
            if self._mine(e.vin):
                due.append(e)
            else:  # another gateway's: checked again next tick (its owner may have died)
                self._live.reschedule(e)
        for e in due:
            self._apply(batch, e, TermEnded(), now)  # R10 renewal or end, R16 month end
        try:
            await self._commit(batch)
        except Exception:
            for e in due:
                self._live.reschedule(e)
            raise

    def _open_fod_windows(self, batch: Batch, now: float) -> None:
        # gateway_fod_waiting{blocker}: this gateway's cars only, so the gateways' sum is the fleet's.
        blocked = dict.fromkeys(BlockerCode, 0)
        for vin in sorted(self._fod_work):
            waiting = [e for e in self._live.of_vin(vin) if e.kind.is_fod and e.state in delivery.FOD_WORK]
            if not waiting:
                self._fod_work.discard(vin)
                self._idle.forget(vin)
                continue
            if not self._mine(vin):
                continue
            session = self._session_of(vin)
            if session is None:  # never connected: nothing to observe, Explain says so
                blocked[BlockerCode.NEVER_CONNECTED] += len(waiting)
                continue
            window = self._idle.observe(session, now, link_good=self._link_good(session))
            if not window.eligible:  # R17: the decision Explain shows (`_fod_window`)
                blocked[window.blockers[0].code] += len(waiting)  # the first a driver would fix
                continue
            eligible_at = window.eligible_at
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
        for code, count in blocked.items():
            self._m.fod_waiting.labels(code.value).set(count)

    def _record_sets(self, now: float) -> Batch:
        batch = Batch()
        for vin in self._sets.candidates():
            entitlements = self._live.of_vin(vin)
            if not delivery.needs_set(entitlements, self._sets.of(vin), forced=self._sets.is_forced(vin)):
                self._sets.settled(vin)
                continue
            if not self._mine(vin):
                continue
            session = self._session_of(vin)
            if session is None or not is_online(session):
                continue
            ids = tuple(e.entitlement_id for e in delivery.set_members(entitlements))
            batch.sets.append(SetRecord(vin, self._sets.next_version(vin), ids, now))  # before sending
        return batch

    async def _send_sets(self, records: Sequence[SetRecord]) -> None:
        downlinks = []
        for record in records:
            members = [e for e in self._live.of_vin(record.vin) if e.entitlement_id in record.entitlement_ids]
            downlinks.append(wire.entitlement_set(record.vin, record.version, members, self._clock.now()))
        # Side by side (one set per VIN per tick, so no car's order is at stake): each publish
        # waits for its PUBACK, and one after the other a restart storm's sets queued behind one
        # broker round trip each (15,000 boots: tens of seconds to the last set, R13). But at
        # most `sets_in_flight` at once: see SETS_IN_FLIGHT.
        pairs = [(r.vin, d) for r, d in zip(records, downlinks, strict=True)]
        oks = await self._downlinks.send_all(pairs, "set", window=self._sets_in_flight)
        sent = [record for record, ok in zip(records, oks, strict=True) if ok]
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

    # -- shared machinery -------------------------------------------------------------------------

    def _mine(self, vin: str) -> bool:
        """This gateway does the car's time-driven work (engine/_shares.py)."""
        return self.shares is None or self.shares.mine(vin)

    async def _follow(self) -> None:
        """Read again the entitlements other gateways changed since the last look, with their
        cars' sets and FoD commands (under `_lock`). Nothing to do on SQLite."""
        follower = self._follower
        if follower is None:
            return
        changes = await follower.changes()
        if not changes.entitlement_ids:
            return
        for e in await self._ledger.refresh(changes.entitlement_ids):
            self._remember(e)
        for sets in await follower.ledger.sets_of(changes.vins):
            self._sets.reload(sets)
        for c in await follower.ledger.latest_commands_of(changes.vins):
            self._commands[c.entitlement_id] = c
        self._m.entitlements_followed.inc(len(changes.entitlement_ids))
        self._update_gauge()

    def _fod_window(self, vin: str, session: VehicleSession | None, now: float) -> FodWindow:
        """R17 for `vin` now, as the last `IdleTimer.observe` left it: what Explain shows. The
        engine acts on the same decision, taken by `observe` in `_open_fod_windows`."""
        link_good = session is not None and self._link_good(session)
        return self._idle.window(vin, session, now, link_good=link_good)


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
        try:
            written = await self._ledger.save(
                list(batch.changed.values()),
                wire.outbox_events(batch.events),
                commands=batch.commands,
                sets=batch.sets,
                published=batch.published,
                acked=batch.acked,
            )
        except VersionConflict as exc:
            # Another gateway sharing the database changed these entitlements: read them again,
            # so that the next attempt (the pipeline retries the batch, the next tick, a client
            # retrying after UNAVAILABLE) starts from what is stored, not from this view again.
            for e in await self._ledger.refresh(exc.entitlement_ids or tuple(batch.changed)):
                self._remember(e)
            if isinstance(exc, SetConflict):
                await self._reload_sets(exc.vins)
            self._m.entitlement_conflicts.inc()
            raise
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

    async def _reload_sets(self, vins: Sequence[str]) -> None:
        """The VINs' sets as stored (after a SetConflict): the next version recorded follows
        the one another gateway took."""
        if self._follower is not None:
            stored = await self._follower.ledger.sets_of(vins)
        else:  # SQLite has no other writer; kept for a Ledger that raises it all the same
            stored = [s for s in await self._ledger.load_sets() if s.vin in vins]
        for s in stored:
            self._sets.reload(s)

    def _remember(self, e: Entitlement) -> None:
        self._live.put(e)
        if e.kind.is_fod:
            if e.state in delivery.FOD_WORK:
                self._fod_work.add(e.vin)
        elif e.state in delivery.SET_WORK:
            self._sets.want(e.vin)

    def _written(self, written: Sequence[OutboxEvent]) -> None:
        if self._follower is not None:
            self._follower.wrote(written)  # not read again: this view has them already
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

    async def _find(self, entitlement_id: str) -> Entitlement:
        e = self._live.get(entitlement_id) or await self._ledger.get(entitlement_id)
        if e is None:
            raise NotFound("not_found", f"no entitlement {entitlement_id!r}")
        return e

    # Last in the class: after it, `list` in annotations would name this method.
    async def list(self, vin: str, include_ended: bool) -> builtins.list[Entitlement]:
        """The VIN's entitlements in grant order; REVOKED ones only with include_ended."""
        return await self._ledger.list(vin, include_ended)


def _waits_for_delivery(e: Entitlement) -> bool:
    """Not in the car yet, and the catalogue's model check holds it back (`_on_boot` and
    `_open_fod_windows`): a pending service, or an FoD still to be unlocked."""
    if e.kind.is_fod:
        return delivery.fod_action(e) is FodAction.UNLOCK
    return e.state is S.PENDING

