"""Group commit: the durable stage as its own task, so a batch's commit overlaps the next
batches' decode, apply and forward, and one commit makes several batches durable.

Why: a commit has a fixed cost (a transaction on the database thread, two thread hops, a
commit-time metric), paid per batch it was, so CPU per message grew as the load fell (smaller
socket reads, smaller batches), and the next batch's records waited for the commit before
being forwarded. Here the pipeline's task adds each applied batch to the pending group and goes
on; one committer task commits what is pending, waiting `linger_s` first so that a light load
still gathers several QoS 0 batches into one commit (nobody waits for it: the telemetry was
forwarded before the batch joined the group). A QoS 1 batch is committed as soon as the
committer is free, as the broker may wait for its acknowledgement to send more; batches that
come while a commit runs still share the next one.

The invariants of the serial pipeline hold (README "Architecture"):
- a batch is acknowledged only after the commit that wrote it; commits and acks in order;
- a commit's snapshots are serialized while no batch is between its apply and the end of its
  forward (`applying`), and every batch applied before that is in the commit: the stored
  replay window never marks a message whose events, entitlement changes or records are not
  durable with it (sinks before the commit, as before);
- a batch with entitlement updates is committed before the next batch is applied (the engine
  runs before the commit and awaits: no apply may change a session meanwhile): `add` waits;
- a failed commit is tried again with every batch applied meanwhile (its snapshots are
  serialized anew at each attempt, from sessions that include those batches).
A shared store (PostgreSQL, a conflict re-applies the batch) stays serial: pipeline.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field

from gateway.entitlements.vehicle import VehicleUpdate
from gateway.model import VehicleSession
from gateway.pipeline.batches import Applied, Message
from gateway.pipeline.durable import Batch, DurableStage
from gateway.session.events import SessionEvent

# How long the committer gathers QoS 0 batches before a commit (the telemetry does not wait for
# it). At 15,000 msg/s it makes ~75 messages one commit.
COMMIT_LINGER_S = 0.005
# A pending group this large is committed without lingering, and the pipeline's task waits
# before adding more (what is applied but not durable stays bounded).
MAX_GROUP_MESSAGES = 4_000


@dataclass(slots=True)
class Group:
    """Applied batches not committed yet, in order."""

    dirty: dict[str, VehicleSession] = field(default_factory=dict)
    events: list[tuple[SessionEvent, VehicleSession]] = field(default_factory=list)
    updates: list[VehicleUpdate] = field(default_factory=list)  # not yet through the engine
    acks: list[Sequence[Message]] = field(default_factory=list)
    messages: int = 0
    awaits_ack: bool = False  # a QoS 1 message among them: the broker waits for its PUBACK

    def add(self, applied: Applied, batch: Sequence[Message]) -> None:
        self.dirty.update(applied.dirty)
        self.events.extend(applied.events)
        self.updates.extend(applied.updates)
        if batch:
            self.acks.append(batch)
            self.awaits_ack = self.awaits_ack or any(m.qos for m in batch)
        self.messages += len(batch)

    def merge(self, later: Group) -> None:
        self.dirty.update(later.dirty)
        self.events.extend(later.events)
        self.updates.extend(later.updates)
        self.acks.extend(later.acks)
        self.messages += later.messages
        self.awaits_ack = self.awaits_ack or later.awaits_ack


class GroupCommit:
    def __init__(
        self,
        *,
        durable: DurableStage,
        ack: Callable[[Sequence[Message]], None],
        on_recovered: Callable[[], None],
        sleep: Callable[[float], Awaitable[None]],
        linger_s: float = COMMIT_LINGER_S,
        max_messages: int = MAX_GROUP_MESSAGES,
    ) -> None:
        """on_recovered: called when a commit succeeded after failed attempts (reading from the
        broker, paused meanwhile, may resume). sleep: the linger's timer (the pipeline's
        `Clock.sleep`: tests move a ManualClock instead of waiting)."""
        self._durable = durable
        self._sleep = sleep
        self._on_recovered = on_recovered
        self._retrying = False
        self._ack = ack
        self._linger_s = linger_s
        self._max = max_messages
        self._pending = Group()
        self._has_pending = False
        self._wake = asyncio.Event()  # something pending, or a flush asked for
        self._quiet = asyncio.Event()  # no batch between its apply and its `add`
        self._quiet.set()
        self._idle = asyncio.Event()  # nothing pending, nothing being committed
        self._idle.set()
        self._urgent = 0  # flushes waiting: commit without lingering
        self._running = False  # `run` is the committer (else `flush` commits)
        self._lingering = False  # the committer waits for the linger's end (or a QoS 1 batch)
        self._taking = False  # the committer waits for quiet to take the pending group
        self._committing = False  # the committer took a group and commits it
        self._unacked = 0  # messages added and not acknowledged yet (pending or being committed)

    def applying(self) -> None:
        """A batch's apply starts: no commit may serialize the sessions until its `add`."""
        self._quiet.clear()

    async def add(self, applied: Applied, batch: Sequence[Message]) -> None:
        """The batch applied and forwarded: it joins the pending group (acknowledged once
        committed). With entitlement updates it is committed before this returns."""
        self._pending.add(applied, batch)
        self._unacked += len(batch)
        self._has_pending = bool(
            self._pending.messages or self._pending.dirty or self._pending.events or self._pending.updates
        )
        self._quiet.set()
        if self._has_pending:
            self._idle.clear()
            if not self._lingering or self._pending.awaits_ack:
                self._wake.set()
        if self._running and not self._committing and (self._taking or self._wake.is_set()):
            # The committer wants this group: let it take it now. Under a backlog this task
            # would otherwise go straight to the next batch's `applying` (its sink may never
            # suspend, or suspend only while a batch is applied): the committer, run later,
            # would find a batch between its apply and its add again and wait, and nothing
            # would be committed (nor acknowledged) before MAX_GROUP_MESSAGES were pending.
            # One loop turn per commit at most: while it commits, this does not yield.
            await asyncio.sleep(0)
        # While commits fail the pipeline's task waits here, as it did in the serial pipeline:
        # what the broker has not sent yet stays with it.
        if applied.updates or self._retrying or self._pending.messages >= self._max:
            await self.flush()

    @property
    def unacked(self) -> int:
        """Messages applied and not acknowledged yet: pending, or in the commit that runs
        (liveness counts them as backlog: a commit that hangs holds them)."""
        return self._unacked

    @property
    def retrying(self) -> bool:
        """A commit failed and is being tried again (reading stays paused)."""
        return self._retrying

    async def flush(self) -> None:
        """Wait until everything added so far is committed and acknowledged; without a running
        committer (`Pipeline.process` called directly), commit it here."""
        if self._idle.is_set():
            return
        if not self._running:
            while self._has_pending:
                await self._commit_pending()
            self._idle.set()
            return
        self._urgent += 1
        self._wake.set()
        try:
            await self._idle.wait()
        finally:
            self._urgent -= 1

    def committer(self) -> Coroutine[None, None, None]:
        """The committer's coroutine (`Pipeline.run` makes it a task). `flush` waits for it
        from now on, even before the task's first step: never two commits at once."""
        self._running = True
        return self._run()

    def stopped(self) -> None:
        """The committer's task is done (or was cancelled before it started): `flush` commits
        by itself again."""
        self._running = False

    async def _run(self) -> None:
        """The committer: commits the pending group, one commit at a time, in order."""
        timer: asyncio.Task[None] | None = None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._has_pending:
                    self._idle.set()
                    continue
                if self._may_linger():
                    if timer is None:
                        self._lingering = True
                        timer = asyncio.create_task(self._linger(), name="gateway.pipeline.linger")
                        continue
                    if self._lingering:
                        continue
                if timer is not None:
                    timer.cancel()
                    timer = None
                self._lingering = False
                await self._commit_pending()
                if self._has_pending:
                    self._wake.set()
                else:
                    self._idle.set()
        finally:
            # Cancelled meanwhile (the group, if one was taken, is pending again: `_commit_pending`):
            # a `flush` without the committer must not find a linger it would wait for.
            self._lingering = False
            if timer is not None:
                timer.cancel()

    def _may_linger(self) -> bool:
        """Gather more batches before committing: only when nobody waits for this commit. A
        QoS 1 message's acknowledgement may be what lets the broker send the next one (ejabberd
        keeps one in flight, a Mosquitto with max_inflight_messages 20 keeps 20): a linger
        would cap the intake at that many messages per linger. So only QoS 0 batches linger."""
        return (
            self._linger_s > 0 and not self._urgent and not self._pending.awaits_ack
            and self._pending.messages < self._max
        )

    async def _linger(self) -> None:
        await self._sleep(self._linger_s)
        self._lingering = False
        self._wake.set()

    async def _commit_pending(self) -> None:
        group = Group()
        handed: list[VehicleUpdate] = []  # the updates taken for the engine by this commit

        def take() -> Batch:
            # Called right before each attempt serializes the sessions: everything applied
            # until now joins this commit (nothing is between its apply and its add).
            group.merge(self._pending)
            self._pending = Group()
            self._has_pending = False
            self._committing = True
            updates, group.updates = group.updates, []
            handed.extend(updates)
            return updates, group.dirty, group.events

        async def again() -> None:
            self._retrying = True
            await self._quiet_now()

        await self._quiet_now()
        try:
            await self._durable.make_durable_group(take, again)
        except BaseException:
            # Cancelled (or a store error never retried) in the middle: what was taken is not
            # known to be durable and stays pending, in front of what came since, so a later
            # `flush` commits it rather than returning at once. Its updates go to the engine
            # again (its handling is idempotent for a replay).
            group.updates = handed
            group.merge(self._pending)
            self._pending = group
            self._has_pending = bool(group.messages or group.dirty or group.events or group.updates)
            raise
        finally:
            self._committing = False
        for batch in group.acks:
            self._unacked -= len(batch)
            self._ack(batch)
        if self._retrying:
            self._retrying = False
            self._on_recovered()

    async def _quiet_now(self) -> None:
        """Return when no batch is between its apply and its `add` (checked again after each
        wait: the pipeline's task may have started the next apply before this task ran)."""
        while not self._quiet.is_set():
            self._taking = True
            try:
                await self._quiet.wait()
            finally:
                self._taking = False
