"""The ingest pipeline's orchestration: batches from the broker through the stages.

    on_batch -> queue -> decode -> [refresh] -> session (+ rules) -> sinks -> durable -> ack
                                                                  (entitlements, store)

The MQTT protocol hands over every complete PUBLISH of one socket read as one batch
(``on_batch``, synchronous, never blocks). One task drains the bounded queue, coalescing what
has accumulated, so per-batch costs (a transaction, metric updates, a gRPC message) are paid
once for many messages. QoS 1 messages are acknowledged to the broker only after the batch's
state and events are committed: a crash before that makes the broker deliver them again, and
the replay window drops what was already applied. While the database cannot commit, the batch
waits (its writes retried with backoff, reading from the broker paused): nothing is
acknowledged before it is durable, and nothing read is dropped (durable.py).

Several gateways on one PostgreSQL database (a SharedStore) may each get messages of the same
car. A batch therefore goes: the gate (decode.py: topic, quarantine, rate limits, payload:
decided once per message), then the refresh (the batch's cars that another gateway wrote since
this one last read or wrote them, in one query, replace the tracker's sessions), then the apply
(session_stage.py, rules.py), then the commit. A commit that finds one of its cars written by
another gateway meanwhile (StoreConflict) wrote nothing; the batch's cars are restored from the
store and the batch applied again (`_apply_durably`), never skipped. On SQLite (one gateway)
there is no refresh and no conflict.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence

from gateway.backoff import Backoff
from gateway.clock import Clock
from gateway.decode import Decoded, DecodedWill
from gateway.egress.sink import TelemetrySink
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.metrics import Metrics
from gateway.pipeline.batches import Applied, LogBudget, Message
from gateway.pipeline.counts import BatchCounts, log_presence
from gateway.pipeline.decode import DecodeStage
from gateway.pipeline.durable import DurableStage
from gateway.pipeline.group_commit import COMMIT_LINGER_S, GroupCommit
from gateway.pipeline.rules import RulesStage
from gateway.pipeline.session_stage import SessionStage
from gateway.pipeline.sinks import SinkStage, keyed
from gateway.reference.store import ReferenceStore
from gateway.rejection_log import RejectionSummary
from gateway.session.hub import EventHub
from gateway.session.ratelimit import CarLimits
from gateway.session.tracker import SessionTracker
from gateway.store.base import SharedStore, Store, StoreConflict

log = logging.getLogger("gateway.pipeline")

MAX_BATCH = 2_000
# The batch limit with group commit (a store that is not shared): the commit's cost is shared by
# the batches the committer gathers, so a batch need not be large to amortize it, and its first
# record waits for the decode and apply of the whole batch before it is forwarded (2,000
# messages at ~30 us each were the 60 ms p99 publish -> gRPC at half load).
GROUPED_BATCH = 250
# Waits between attempts to commit a batch while the database fails: 0.1 s doubling to 2 s, so
# a database back after an outage is used again within 2 s.
COMMIT_BACKOFF = Backoff(initial_s=0.1, max_s=2.0)
# Conflicting commits of one batch (another gateway wrote one of its cars meanwhile) applied
# again at once; beyond that each attempt waits as a failed commit does (`_apply_durably`).
MAX_REAPPLY = 5
# How often the presence timer asks whether a grace period, a liveness timeout or a quarantine
# ran out while no batch came (each batch runs them out anyway).
PRESENCE_TICK_S = 1.0


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
        presence_tick_s: float = PRESENCE_TICK_S,
        commit_linger_s: float = COMMIT_LINGER_S,
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
        presence_tick_s: the presence timer's period on `clock` (`run`).
        commit_linger_s: how long `run`'s committer gathers batches into one commit
            (group_commit.py); only the QoS 1 acknowledgements wait for it.
        """
        self._tracker = tracker
        self._m = metrics
        self._clock = clock
        # The batches on_batch handed over, not processed yet; `_wake` is set when one is added,
        # when the presence timer finds something due (`_tick_due`) and at `close`.
        self._batches: deque[Sequence[Message]] = deque()
        self._wake = asyncio.Event()
        self._tick_due = False
        self._presence_tick_s = presence_tick_s
        self._queue_limit = queue_messages
        self._queued = 0  # messages in the queue: the bound is on messages, not socket reads
        self._ack = ack
        self._pause = pause_reading
        self._resume = resume_reading
        self._quarantine_changed = quarantine_changed
        self._commit_backoff = commit_backoff
        self._shared = shared_store
        self._paused = False
        # A commit failed and is retried (`_hold`): reading stays paused until it succeeds,
        # however far the queue drains meanwhile (cleared by `_recovered`).
        self._held = False
        self._paused_at = 0.0  # clock time reading was paused (gateway_ingress_paused_seconds_total)
        self._in_batch = 0  # messages of the batch being processed (taken off the queue)
        # What is read and not acknowledged yet (`queued`), read when /metrics is scraped.
        metrics.ingress_queued.set_function(lambda: self.queued)
        self._closing = False
        log_budget = LogBudget()
        self._commit_log_budget = LogBudget()  # its own: rejections must not silence it
        # The stages, in the order a batch passes them.
        self._decode = DecodeStage(
            max_payload_bytes=max_payload_bytes, limits=limits, epoch_of=self._epoch_of,
            log_budget=log_budget,
        )
        self._session = SessionStage(
            tracker=tracker, reference=reference, rules=RulesStage(reference=reference, clock=clock),
            heartbeat_default_s=heartbeat_default_s, shared=shared_store is not None,
            log_budget=log_budget,
        )
        self._sinks = SinkStage(telemetry=telemetry, metrics=metrics)
        self._durable = DurableStage(
            store=store, hub=hub, metrics=metrics, tracker=tracker, entitlements=entitlements,
            backoff=commit_backoff, sleep=sleep, outcome=outcome, hold=self._hold,
            log_budget=self._commit_log_budget,
        )
        # Not on a shared store: a conflict there applies the batch again, so its commit must
        # come before the next batch's apply (`_apply_durably`).
        self._group = (
            GroupCommit(durable=self._durable, ack=self._acked, on_recovered=self._recovered,
                        sleep=clock.sleep, linger_s=commit_linger_s)
            if shared_store is None else None
        )
        self._counts = BatchCounts(metrics=metrics, tracker=tracker)
        self._rejections = RejectionSummary(clock)  # the operator's view: counts, no VINs
        self.processed = 0

    @property
    def queued(self) -> int:
        """Messages read from the broker and not acknowledged yet: queued, in the batch in
        process, or applied and waiting for their group's commit (group_commit.py). Liveness's
        backlog (gateway/liveness.py): a commit that never returns holds them, and `processed`
        does not grow; gateway_ingress_queued_messages."""
        unacked = self._group.unacked if self._group is not None else 0
        return self._queued + self._in_batch + unacked

    # -- called from the MQTT protocol (synchronously, on the event loop) --
    def on_batch(self, messages: Sequence[Message]) -> None:
        self._batches.append(messages)
        self._queued += len(messages)
        self._wake.set()
        if not self._paused and self._queued >= self._queue_limit:
            self._m.ingress_paused.inc()
            self._pause_reading()

    async def run(self) -> None:
        """Process batches until ``close`` was called and the queue is empty; meanwhile the
        presence timer runs out grace periods, liveness timeouts and quarantines when no batch
        comes, and the committer commits the applied batches (group_commit.py). All under this
        task's TaskGroup: cancelling `run` ends the timer and the committer too."""
        try:
            async with asyncio.TaskGroup() as tasks:
                timer = tasks.create_task(self._presence_timer(), name="gateway.pipeline.presence")
                committer = (
                    tasks.create_task(self._group.committer(), name="gateway.pipeline.commit")
                    if self._group is not None else None
                )
                try:
                    await self._drain()
                    if self._group is not None:
                        await self._group.flush()  # everything applied is durable and acked
                finally:
                    timer.cancel()
                    if committer is not None:
                        committer.cancel()
        except BaseExceptionGroup as group:
            # The timer only sleeps and sets a flag: an error is the drain's or the committer's
            # (a bug, or a store that refused in a way never retried). Raised as itself, as
            # before the TaskGroup, for whoever awaits this task (Gateway.wait).
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            if self._group is not None:
                self._group.stopped()

    async def _drain(self) -> None:
        """The single writer of the sessions: a batch and a tick never run at the same time,
        because this loop alone runs both, one after the other."""
        batches = self._batches
        while True:
            # Checked before waiting too: a commit that recovered wakes this loop (reading was
            # paused while it failed, `_hold`) although no batch came.
            if self._paused and self._queued <= self._queue_limit // 2 and not self._held:
                self._resume_reading()
            if not batches and not self._tick_due:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: list[Message] = []
            if batches:
                # Coalesce what queued up, but not without bound: a smaller batch reaches the
                # backends sooner (steadier latency); 2,000 still amortizes the per-batch commit
                # of a shared store; with group commit a socket read beyond the limit is split.
                limit = MAX_BATCH if self._group is None else GROUPED_BATCH
                while batches and len(batch) < limit:
                    read = batches.popleft()
                    room = limit - len(batch)
                    if len(read) > room and self._group is not None:
                        batches.appendleft(read[room:])
                        read = read[:room]
                    batch.extend(read)
                self._queued -= len(batch)
            if batch:
                # A batch runs out whatever a tick would: `process` reads the clock after this.
                self._tick_due = False
                self._in_batch = len(batch)
                await self._step(batch, count_batch=True)  # committed by the committer
                self._in_batch = 0
            elif self._tick_due:
                self._tick_due = False
                await self._tick()
            if self._group is None:
                self._held = False  # serial: the step returned once its commit succeeded

    def _pause_reading(self) -> None:
        self._paused = True
        self._paused_at = self._clock.now()
        self._m.ingress_reading_paused.set(1)
        self._pause()

    def _resume_reading(self) -> None:
        self._paused = False
        self._m.ingress_reading_paused.set(0)
        self._m.ingress_paused_seconds.inc(max(0.0, self._clock.now() - self._paused_at))
        self._resume()

    async def _presence_timer(self) -> None:
        """Every `presence_tick_s` on the clock (tests move a ManualClock), ask the drain loop
        for a tick when something is due. It never touches a session itself (single writer)."""
        while True:
            await self._clock.sleep(self._presence_tick_s)
            if self.presence_due():
                self._tick_due = True
                self._wake.set()

    def close(self) -> None:
        """Finish: ``run`` returns after processing what is queued (reading has stopped)."""
        self._closing = True
        self._wake.set()

    async def tick(self) -> None:
        """Time passed without a batch: grace periods (R20), liveness timeouts and quarantines
        that ran out take effect (the session stage with no messages; nothing to acknowledge);
        durable when this returns."""
        await self._tick()
        if self._group is not None:
            await self._group.flush()

    async def _tick(self) -> None:
        if self._tracker.has_deadlines or self._decode.quarantined:
            await self._step((), count_batch=False)

    async def process(self, batch: Sequence[Message], *, durable: bool = True) -> None:
        """One batch through the stages; acknowledged and durable when this returns (`run`
        does not wait: its committer makes the batches durable, group_commit.py).
        durable=False (not on a shared store): return once it is applied and forwarded; it
        is committed with the next durable one (load/pipeline_micro.py --commit-every)."""
        await self._step(batch, count_batch=True)
        if self._group is not None and durable:
            await self._group.flush()

    async def _step(self, batch: Sequence[Message], *, count_batch: bool) -> None:
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
            await self._durable.refresh(self._shared, touched, now=now, every=False)
        items = self._decode.gate_hellos(gated, now, rejected)
        if self._group is not None:
            # Group commit (group_commit.py): the batch is acknowledged once the committer has
            # committed it. Sinks before the commit, as in `_apply_durably`. Counted before it
            # is durable: on a store that is not shared the apply is final. An apply or forward
            # that raises leaves commits stopped (`applying` without `add`): its sessions changed
            # without the batch in the group; the error ends `run`.
            group = self._group
            group.applying()
            applied = self._session.apply(items, now)
            await self._sinks.forward(applied.records)
            self._count(applied, rejected, count_batch, len(batch))
            self._in_batch = 0  # from here on in the group's `unacked` (`queued`)
            await group.add(applied, batch if count_batch else ())
        else:
            applied = await self._apply_durably(items, now, touched)
            if count_batch:
                self._acked(batch)
            self._count(applied, rejected, count_batch, len(batch))

    def _acked(self, batch: Sequence[Message]) -> None:
        """The batch is durable: acknowledged, and `processed` (liveness progress) grows."""
        self._ack(batch)
        self.processed += len(batch)

    def _count(self, applied: Applied, rejected: Counter[str], count_batch: bool, n: int) -> None:
        if count_batch:
            rejected.update(applied.rejected)
            self._counts.batch(n, applied.kinds, rejected, applied.stale)
        else:
            self._counts.sessions()
        self._counts.applied(applied)
        self._rejections.add(rejected)  # a tick adds none, but writes a summary that is due
        if log.isEnabledFor(logging.DEBUG):
            log_presence(applied.events)

    def presence_due(self) -> bool:
        """A grace period, a liveness timeout or a quarantine may have run out: worth a tick."""
        now = self._clock.now()
        return self._session.due(now) or self._decode.due(now)

    async def _apply_durably(
        self, items: list[Decoded | DecodedWill], now: float, touched: set[str]
    ) -> Applied:
        """Apply the messages to the sessions and make the outcome durable (durable.py).

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
        sent: set[tuple[str, int, int]] = set()  # (vin, sequence, sample) handed to the sink
        while True:
            applied = self._session.apply(items, now)
            # Sinks before the commit, on purpose (sinks.py, README "Telemetry sinks"): at least
            # once, never lost. It waits while a durable sink is down.
            # Applied again after a conflict, the same messages give the same records: those
            # handed over already are not handed over twice (live subscribers would see them
            # twice). A record handed over before a conflict was judged right: its privacy is
            # its own envelope header's (R22), whatever the other gateway wrote meanwhile.
            if shared is None:
                await self._sinks.forward(applied.records)
            else:
                records = keyed(applied.records)
                await self._sinks.forward([r for key, r in records if key not in sent])
                sent.update(key for key, _ in records)
            try:
                await self._durable.make_durable(applied.updates, applied.dirty, applied.events)
                return applied
            except StoreConflict as conflict:
                if shared is None:
                    raise  # a store that is not shared has no other writer: a bug, not a race
                conflicts += 1
                self._m.store_conflicts.inc()
                if conflicts > MAX_REAPPLY:
                    delays = delays or self._commit_backoff.delays()
                    await self._durable.failed("store", conflict, delays, outage=False)
                elif self._commit_log_budget.allow():
                    log.info("batch commit conflicted (%s); applying it again on the stored state", conflict)
                await self._durable.refresh(
                    shared, touched | applied.dirty.keys(), now=now, every=True, pending=pending
                )

    def _hold(self) -> None:
        """Pause reading from the broker while a batch cannot be made durable: what the broker
        has not sent yet stays with it (resumed by `run` once the commit succeeded and the
        queue has drained). Called before the backoff's first wait: the queue may drain during
        it, and the database is still down."""
        self._held = True
        if not self._paused:
            self._pause_reading()

    def _recovered(self) -> None:
        """A group commit succeeded after failed attempts: reading may resume."""
        self._held = False
        self._wake.set()

    def _epoch_of(self, vin: str) -> int | None:
        session = self._tracker.get(vin)
        return session.sequence_epoch if session is not None else None
