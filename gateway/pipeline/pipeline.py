"""The ingest pipeline: batches from the broker -> decode -> session -> rules -> store -> egress.

The MQTT protocol hands over every complete PUBLISH of one socket read as one batch
(``on_batch``, synchronous, never blocks). One task drains the bounded queue, coalescing what
has accumulated, so per-batch costs (a transaction, metric updates, a gRPC message) are paid
once for many messages. QoS 1 messages are acknowledged to the broker only after the batch's
state and events are committed: a crash before that makes the broker deliver them again, and
the replay window drops what was already applied. While the database cannot commit, the batch
waits (its writes retried with backoff, reading from the broker paused): nothing is
acknowledged before it is durable, and nothing read is dropped (`_make_durable`).

Several gateways on one PostgreSQL database (a SharedStore) may each get messages of the same
car. A batch therefore goes: the gate (topic, quarantine, rate limits, payload: decided once per
message), then the refresh (the batch's cars that another gateway wrote since this one last read
or wrote them, in one query, replace the tracker's sessions), then the apply, then the commit. A
commit that finds one of its cars written by another gateway meanwhile (StoreConflict) wrote
nothing; the batch's cars are restored from the store and the batch applied again
(`_apply_durably`), never skipped. On SQLite (one gateway) there is no refresh and no conflict.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence

from gateway._gen.telematics.v1 import telemetry_pb2
from gateway.backoff import Backoff
from gateway.clock import Clock
from gateway.convert import event_to_proto
from gateway.decode import Decoded, DecodedWill
from gateway.egress.sink import TelemetrySink
from gateway.entitlements.ledger import LedgerError, VersionConflict
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.metrics import MESSAGE_KINDS, Metrics
from gateway.model import Bearer, VehicleSession
from gateway.pipeline.batches import Applied, LogBudget, Message
from gateway.pipeline.decode import DecodeStage
from gateway.pipeline.rules import RulesStage
from gateway.pipeline.session_stage import SessionStage
from gateway.reference.store import ReferenceStore
from gateway.session.events import SessionEvent
from gateway.session.hub import EventHub
from gateway.session.ratelimit import CarLimits
from gateway.session.tracker import SessionTracker
from gateway.store.base import PendingEvent, SharedStore, Store, StoreConflict, StoreError

log = logging.getLogger(__name__)

MAX_BATCH = 2_000
# Waits between attempts to commit a batch while the database fails: 0.1 s doubling to 2 s, so
# a database back after an outage is used again within 2 s.
COMMIT_BACKOFF = Backoff(initial_s=0.1, max_s=2.0)
# Conflicting commits of one batch (another gateway wrote one of its cars meanwhile) applied
# again at once; beyond that each attempt waits as a failed commit does (`_apply_durably`).
MAX_REAPPLY = 5










_BEARER_LABEL = {
    Bearer.EMBEDDED_SIM: "embedded_sim",
    Bearer.INSERTED_SIM: "inserted_sim",
    Bearer.WIFI_HOTSPOT: "wifi_hotspot",
    Bearer.UNSPECIFIED: "unspecified",
}


class Pipeline:
    def __init__(
        self,
        *,
        tracker: SessionTracker,
        store: Store,
        hub: EventHub,
        telemetry: TelemetrySink,
        metrics: Metrics,
        clock: Clock,
        reference: ReferenceStore,
        max_payload_bytes: int,
        queue_messages: int,
        ack: Callable[[Sequence[Message]], None],
        pause_reading: Callable[[], None],
        resume_reading: Callable[[], None],
        entitlements: Callable[[Sequence[VehicleUpdate]], Awaitable[None]] | None = None,
        heartbeat_default_s: float = 120.0,
        limits: CarLimits | None = None,
        quarantine_changed: Callable[[Sequence[str], Sequence[str]], None] | None = None,
        commit_backoff: Backoff = COMMIT_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        outcome: Callable[[str, BaseException | None], None] | None = None,
        shared_store: SharedStore | None = None,
    ) -> None:
        """
        tracker: the in-memory sessions. store: durable snapshots and events.
        reference: sim_profiles/ and roaming/ data (service catalogue, presence grace).
        hub: wakes Watch streams. telemetry: where records leave the gateway (egress/sink.py).
        max_payload_bytes: larger payloads are rejected (reason "oversize").
        queue_messages: messages buffered before reading from the broker pauses (backpressure).
        ack: acknowledges QoS 1 messages once their batch is committed.
        pause_reading, resume_reading: stop and restart reading from the broker socket.
        heartbeat_default_s: the heartbeat interval of a car whose Hello announces none.
        limits: per-car token buckets (messages, Hellos); None: unlimited (unit tests).
        quarantine_changed: called with (quarantined, released) VINs after a batch in which
            ``limits.quarantine`` changed, to have the broker drop or let in their uplink.
        commit_backoff, sleep: the waits between attempts to commit a batch while the database
            fails (tests pass a sleep that records instead of waiting).
        outcome: told each commit's outcome per component ("ledger", "store"; None = it
            succeeded), for readiness (gateway/store/availability.py).
        shared_store: `store` when other gateways write it too (PostgreSQL): the batch's cars
            are refreshed from it before each batch, and a conflicting commit is applied again
            (`_apply_durably`). None (SQLite, one gateway): the memory is the whole truth.
        """
        self._tracker = tracker
        self._store = store
        self._hub = hub
        self._telemetry = telemetry
        self._m = metrics
        self._clock = clock
        self._queue: asyncio.Queue[Sequence[Message]] = asyncio.Queue()
        self._queue_limit = queue_messages
        self._queued = 0  # messages in the queue: the bound is on messages, not socket reads
        self._ack = ack
        self._pause = pause_reading
        self._resume = resume_reading
        self._entitlements = entitlements
        self._quarantine_changed = quarantine_changed
        self._commit_backoff = commit_backoff
        self._sleep = sleep
        self._outcome = outcome
        self._shared = shared_store
        self._paused = False
        self._closing = False
        self._received = {k: metrics.messages_received.labels(k) for k in MESSAGE_KINDS}
        self._rejected = metrics.messages_rejected
        self._log_budget = LogBudget()
        self._commit_log_budget = LogBudget()  # its own: rejections must not silence it
        self._decode = DecodeStage(
            max_payload_bytes=max_payload_bytes, limits=limits, epoch_of=self._epoch_of,
            log_budget=self._log_budget,
        )
        self._session = SessionStage(
            tracker=tracker, reference=reference, rules=RulesStage(reference=reference, clock=clock),
            heartbeat_default_s=heartbeat_default_s, shared=shared_store is not None,
            log_budget=self._log_budget,
        )
        self.processed = 0

    def _epoch_of(self, vin: str) -> int | None:
        session = self._tracker.get(vin)
        return session.sequence_epoch if session is not None else None

    # -- called from the MQTT protocol (synchronously, on the event loop) --
    def on_batch(self, messages: Sequence[Message]) -> None:
        self._queue.put_nowait(messages)
        self._queued += len(messages)
        if not self._paused and self._queued >= self._queue_limit:
            self._paused = True
            self._m.ingress_paused.inc()
            self._pause()

    async def run(self) -> None:
        """Process batches until ``close`` was called and the queue is empty."""
        while True:
            first = await self._queue.get()
            batch = list(first)
            # Coalesce what queued up, but not without bound: a smaller batch reaches the backends
            # sooner (steadier latency); 2,000 still amortizes the per-batch commit well.
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.extend(self._queue.get_nowait())
            self._queued -= len(batch)
            # An empty batch is a tick: grace periods and liveness timeouts run out.
            if batch or self._tracker.has_deadlines or self._decode.quarantined:
                await self.process(batch)
            if self._closing and self._queue.empty():
                return
            if self._paused and self._queued <= self._queue_limit // 2:
                self._paused = False
                self._resume()


    def close(self) -> None:
        """Finish: ``run`` returns after processing what is queued (reading has stopped)."""
        self._closing = True
        self._queue.put_nowait(())

    async def process(self, batch: Sequence[Message]) -> None:
        now = self._clock.now()
        rejected: Counter[str] = Counter()
        # The gate decides once per message, whatever happens to the apply below: a message is
        # charged to its car's rate limits once even when its batch is applied twice.
        gated = self._decode.gate(batch, now, rejected)
        if (gated.quarantined or gated.released) and self._quarantine_changed is not None:
            self._quarantine_changed(gated.quarantined, gated.released)
        touched: set[str] = set()
        if self._shared is not None:
            # Another gateway may have applied messages of these cars since this one last read
            # or wrote them (the broker spreads a car's messages): apply on the stored state.
            touched = {d.vin for d in gated.items} | self._tracker.due_vins(now)
            await self._adopt_stored(self._shared, touched, now=now, every=False)
        items = self._decode.gate_hellos(gated, now, rejected)
        applied = await self._apply_durably(items, now, touched)
        self._ack(batch)
        self.processed += len(batch)
        rejected.update(applied.rejected)
        self._update_metrics(len(batch), applied.kinds, rejected, applied.stale)
        self._applied_metrics(applied)



    async def _apply_durably(
        self, items: list[Decoded | DecodedWill], now: float, touched: set[str]
    ) -> Applied:
        """Apply the messages to the sessions and make the outcome durable (`_make_durable`).

        On a shared store (PostgreSQL) the commit may find that another gateway wrote one of the
        cars after the refresh (StoreConflict, nothing written): every car the batch touched is
        restored from the store, with the grace periods as they were, and the batch applied
        again, so no state change is lost and every event is computed from the car's real
        state. A message the other gateway applied already is then a duplicate for the replay
        window and dropped (at least once: each of its effects happens once). The entitlement
        engine may see a message twice that way, as after a redelivery (its handling is
        idempotent for replays). After MAX_REAPPLY conflicts in a row each further attempt waits
        as a failed commit does (backoff, reading paused): a car hammered by two gateways at
        once must not spin the loop. SQLite (one gateway, no SharedStore) never conflicts.
        """
        shared = self._shared
        pending = dict(self._tracker.pending_offline) if shared is not None else None
        delays: Iterator[float] | None = None  # made at the first wait, not for every batch
        conflicts = 0
        while True:
            applied = self._session.apply(items, now)
            # The sink has the records before the commit marks their messages as seen (replay
            # window) and long before the acknowledgement: after a crash the broker delivers
            # them again and they are handed over again (at least once; a durable sink drops a
            # repeat by message id), never lost. It waits while a durable sink is down.
            await self._to_sink(applied.records)
            try:
                await self._make_durable(applied.updates, applied.dirty, applied.events)
                return applied
            except StoreConflict as conflict:
                if shared is None:
                    raise  # a store that is not shared has no other writer: a bug, not a race
                conflicts += 1
                self._m.store_conflicts.inc()
                if conflicts > MAX_REAPPLY:
                    delays = delays or self._commit_backoff.delays()
                    await self._failed("store", conflict, delays, outage=False)
                elif self._commit_log_budget.allow():
                    log.info("batch commit conflicted (%s); applying it again on the stored state", conflict)
                await self._adopt_stored(
                    shared, touched | applied.dirty.keys(), now=now, every=True, pending=pending
                )

    async def _to_sink(self, records: list[telemetry_pb2.TelemetryRecord]) -> None:
        if records:
            got = await self._telemetry.publish(records)
            self._m.telemetry_records.labels("forwarded" if got else "no_subscriber").inc(len(records))

    async def _adopt_stored(
        self,
        shared: SharedStore,
        vins: set[str],
        *,
        now: float,
        every: bool,
        pending: dict[str, tuple[float, int]] | None = None,
    ) -> None:
        """Replace the tracker's sessions of `vins` by the stored ones: those another gateway
        wrote (every=False, before applying), or all of them (every=True, undoing an apply that
        did not commit: the cars it created and never stored are forgotten). While the
        database fails, wait and read again as `_make_durable` does."""
        delays = self._commit_backoff.delays()
        failed = False
        while True:
            try:
                fresh = await shared.fresh_sessions(sorted(vins), every=every)
                break
            except StoreError as exc:
                failed = True
                await self._failed("store", exc, delays)
        if failed:
            self._tell("store", None)
        gone = vins - {s.vin for s in fresh} if every else set()
        self._tracker.adopt(fresh, gone, now=now, pending=pending)
        if fresh and not every:
            self._m.vehicles_refreshed.inc(len(fresh))


    def _applied_metrics(self, a: Applied) -> None:
        """The counts of the apply that committed (one that conflicted counts for nothing)."""
        for (rule, outcome), count in a.decisions.items():
            self._m.rule_decisions.labels(rule, outcome).inc(count)
        for outcome, count in a.grace.items():
            self._m.presence_grace_started.labels(outcome).inc(count)
        if a.timeouts:
            self._m.presence_timeouts.inc(a.timeouts)
        # Counted once per batch, not per envelope (a metric update takes a lock).
        if a.withheld_records:
            self._m.privacy_withheld_records.inc(a.withheld_records)
        if a.withheld_signals:
            self._m.privacy_withheld_signals.inc(a.withheld_signals)

    async def _make_durable(
        self,
        updates: list[VehicleUpdate],
        dirty: dict[str, VehicleSession],
        events: list[tuple[SessionEvent, VehicleSession]],
    ) -> None:
        """Commit the batch's entitlement changes, then its snapshots and events; while the
        database fails, wait and try again (bounded exponential backoff) with reading from the
        broker paused, so the broker keeps what is not acknowledged yet (README "Architecture").

        Only the writes are retried, never the messages: they were applied to the in-memory
        sessions once (the replay window has marked their sequences, so applying them again
        would drop them as duplicates). The snapshots are serialized from those sessions at each
        attempt; nothing else changes them meanwhile (this task is their only writer, and it
        waits here). A step that committed is not repeated: the entitlement engine's writes
        are idempotent for a replay, but need not be done twice.

        Every StoreError and LedgerError is retried, a refusal as much as a lost connection:
        dropping the batch would lose what the cars sent, so a database that keeps refusing
        holds the ingest (readiness says so, gateway_store_commit_retries_total counts
        it) rather than losing it. A StoreConflict (a shared store: another gateway wrote one of
        the cars) is not retried here, where it could never succeed: it goes to the caller,
        which applies the messages again on the stored state (`_apply_durably`).
        """
        engine_due = self._entitlements is not None and bool(updates)
        delays: Iterator[float] | None = None  # made at the first failure, not for every batch
        while True:
            step = "entitlements" if engine_due else "store"
            try:
                if engine_due and self._entitlements is not None:
                    # Before the session commit: after a crash in between, the replay window
                    # has not seen these messages, so the broker's redelivery reaches the engine
                    # again (its handling is idempotent). The other order could drop an FoD
                    # result as a duplicate.
                    await self._entitlements(updates)
                    engine_due = False
                    self._tell("ledger", None)
                    step = "store"
                if await self._commit(dirty, events):
                    self._tell("store", None)
                return
            except VersionConflict as exc:
                # Another gateway changed an entitlement first; the engine has read it again,
                # so the next attempt works from it. The database works: readiness not told.
                delays = delays or self._commit_backoff.delays()
                await self._failed(step, exc, delays, outage=False)
            except (StoreError, LedgerError) as exc:
                delays = delays or self._commit_backoff.delays()
                await self._failed(step, exc, delays)

    async def _failed(
        self, step: str, exc: Exception, delays: Iterator[float], *, outage: bool = True
    ) -> None:
        """A step of making a batch durable failed: say so, pause reading, wait the next delay.
        outage=False: the database works (a conflict storm), readiness is not told."""
        if outage:
            self._tell("ledger" if step == "entitlements" else "store", exc)
        self._m.store_commit_retries.labels(step).inc()
        if not self._paused:
            # Backpressure: what the broker has not sent yet stays with it.
            self._paused = True
            self._pause()
        delay = next(delays)
        if self._commit_log_budget.allow():
            log.warning("batch commit failed (%s): %s; retrying in %.1f s, not acknowledged",
                        step, exc, delay)
        await self._sleep(delay)

    def _tell(self, component: str, error: BaseException | None) -> None:
        if self._outcome is not None:
            self._outcome(component, error)



    def presence_due(self) -> bool:
        """A grace period, a liveness timeout or a quarantine may have run out: worth a tick."""
        now = self._clock.now()
        return self._session.due(now) or self._decode.due(now)



    async def _commit(
        self,
        dirty: dict[str, VehicleSession],
        events: list[tuple[SessionEvent, VehicleSession]],
    ) -> bool:
        """Write the batch's snapshots and events; False when there was nothing to write."""
        if not dirty and not events:
            return False
        pending = [
            PendingEvent(
                e.vin,
                e.kind.value,
                event_to_proto(e, s).SerializeToString(),
                dedupe_key=e.dedupe_key,
            )
            for e, s in events
        ]
        started = time.perf_counter()
        written = await self._store.commit_batch(list(dirty.values()), pending)
        self._m.store_commit_seconds.observe(time.perf_counter() - started)
        if written:
            for w in written:
                self._m.events_written.labels(w.kind).inc()
            self._hub.notify(written[-1].cursor)
        return True

    def _update_metrics(
        self, n: int, kinds: Counter[str], rejected: Counter[str], stale: Counter[str]
    ) -> None:
        self._m.ingress_batch_messages.observe(n)
        for kind, count in kinds.items():
            self._received[kind].inc(count)
        for reason, count in rejected.items():
            self._rejected.labels(reason).inc(count)
        for outcome, count in stale.items():
            self._m.messages_stale.labels(outcome).inc(count)
        for bearer, count in self._tracker.online_by_bearer.items():
            self._m.vehicles_online.labels(_BEARER_LABEL[bearer]).set(count)
        self._m.vehicles_tracked.set(len(self._tracker.sessions))








