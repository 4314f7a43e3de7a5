"""The durable stage: a batch's entitlement changes, then its snapshots and events committed,
retried with backoff while the database fails (nothing is acknowledged before it is durable);
and the refresh of a shared store's cars that another gateway wrote."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from gateway.backoff import Backoff
from gateway.convert import event_to_proto
from gateway.entitlements.ledger import LedgerError, VersionConflict
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.pipeline.batches import LogBudget
from gateway.session.events import SessionEvent
from gateway.session.hub import EventHub
from gateway.session.tracker import SessionTracker
from gateway.store.base import PendingEvent, SharedStore, Store, StoreError

log = logging.getLogger("gateway.pipeline")

# What one attempt to make batches durable writes: the entitlement updates not yet handed to
# the engine, the sessions whose snapshots to write, the events.
Batch = tuple[list[VehicleUpdate], dict[str, VehicleSession], list[tuple[SessionEvent, VehicleSession]]]


class DurableStage:
    def __init__(
        self,
        *,
        store: Store,
        hub: EventHub,
        metrics: Metrics,
        tracker: SessionTracker,
        entitlements: Callable[[Sequence[VehicleUpdate]], Awaitable[None]] | None,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]],
        outcome: Callable[[str, BaseException | None], None] | None,
        hold: Callable[[], None],
        log_budget: LogBudget,
    ) -> None:
        """
        entitlements: the engine's handling of the batch's vehicle updates (before the commit).
        backoff, sleep: the waits between attempts while the database fails.
        outcome: told each commit's outcome per component ("ledger", "store"; None = it
            succeeded), for readiness (gateway/store/availability.py).
        hold: pauses reading from the broker while a commit waits (backpressure).
        """
        self._store = store
        self._hub = hub
        self._m = metrics
        self._tracker = tracker
        self._entitlements = entitlements
        self._backoff = backoff
        self._sleep = sleep
        self._outcome = outcome
        self._hold = hold
        self._log_budget = log_budget

    async def make_durable(
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
        attempt; nothing else changes them meanwhile (the pipeline's task is their only writer,
        and it waits here). A step that committed is not repeated: the entitlement engine's
        writes are idempotent for a replay, but need not be done twice.

        Every StoreError and LedgerError is retried, a refusal as much as a lost connection:
        dropping the batch would lose what the cars sent, so a database that keeps refusing
        holds the ingest (readiness says so, gateway_store_commit_retries_total counts
        it) rather than losing it. A StoreConflict (a shared store: another gateway wrote one of
        the cars) is not retried here, where it could never succeed: it goes to the caller,
        which applies the messages again on the stored state (`Pipeline._apply_durably`).
        """
        taken = [(updates, dirty, events)]

        def take() -> Batch:
            return taken.pop() if taken else ([], dirty, events)

        await self.make_durable_group(take)

    async def make_durable_group(
        self, take: Callable[[], Batch], quiet: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """`make_durable` of what `take` returns before each attempt: the entitlement updates
        not handed over yet, and the snapshots and events to commit (group_commit.py: each
        attempt takes every batch applied until then). `quiet`, awaited before each attempt
        after the first: returns when no batch is between its apply and its forward."""
        updates: list[VehicleUpdate] = []
        delays: Iterator[float] | None = None  # made at the first failure, not for every batch
        while True:
            more, dirty, events = take()
            updates.extend(more)
            step = "store"
            try:
                if updates and self._entitlements is not None:
                    step = "entitlements"
                    # Before the session commit: after a crash in between, the replay window
                    # has not seen these messages, so the broker's redelivery reaches the engine
                    # again (its handling is idempotent). The other order could drop an FoD
                    # result as a duplicate.
                    await self._entitlements(updates)
                    updates = []
                    self._tell("ledger", None)
                    step = "store"
                if await self._commit(dirty, events):
                    self._tell("store", None)
                return
            except VersionConflict as exc:
                # Another gateway changed an entitlement first; the engine has read it again,
                # so the next attempt works from it. The database works: readiness not told.
                delays = delays or self._backoff.delays()
                await self.failed(step, exc, delays, outage=False)
            except (StoreError, LedgerError) as exc:
                delays = delays or self._backoff.delays()
                await self.failed(step, exc, delays)
            if quiet is not None:
                await quiet()

    async def failed(
        self, step: str, exc: Exception, delays: Iterator[float], *, outage: bool = True
    ) -> None:
        """A step of making a batch durable failed: say so, pause reading, wait the next delay.
        outage=False: the database works (a conflict storm), readiness is not told."""
        if outage:
            self._tell("ledger" if step == "entitlements" else "store", exc)
        self._m.store_commit_retries.labels(step).inc()
        self._hold()  # backpressure: what the broker has not sent yet stays with it
        delay = next(delays)
        if self._log_budget.allow():
            log.warning("batch commit failed (%s): %s; retrying in %.1f s, not acknowledged",
                        step, exc, delay)
        await self._sleep(delay)

    async def refresh(
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
        database fails, wait and read again as `make_durable` does."""
        delays = self._backoff.delays()
        failed = False
        while True:
            try:
                fresh = await shared.fresh_sessions(sorted(vins), every=every)
                break
            except StoreError as exc:
                failed = True
                await self.failed("store", exc, delays)
        if failed:
            self._tell("store", None)
        gone = vins - {s.vin for s in fresh} if every else set()
        self._tracker.adopt(fresh, gone, now=now, pending=pending)
        if fresh and not every:
            self._m.vehicles_refreshed.inc(len(fresh))

    def _tell(self, component: str, error: BaseException | None) -> None:
        if self._outcome is not None:
            self._outcome(component, error)

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
