"""Group commit (gateway/pipeline/group_commit.py): while a commit runs, the next batches are
applied and forwarded, and they share the next commit; a batch is acknowledged only once the
commit that wrote it is done, in order; a commit never writes a session changed by a batch whose
records are not with the sink yet; QoS 0 batches linger into one commit, a QoS 1 one does not
wait. Everything is driven by gates and loop turns, no time passes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest
from test_pipeline import REFERENCE, VIN, FakeStore, hello, telemetry
from test_pipeline_presence_timer import turns_until
from test_pipeline_sink import RecordingSink

from gateway._gen.telematics.v1 import common_pb2
from gateway.clock import ManualClock
from gateway.egress.record import OutRecord
from gateway.liveness import Liveness
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.pipeline import Message, Pipeline
from gateway.pipeline.pipeline import GROUPED_BATCH
from gateway.session.hub import EventHub
from gateway.session.tracker import SessionTracker
from gateway.store.base import PendingEvent, StoredEvent

OFF = common_pb2.PRIVACY_MODE_OFF


@dataclass(frozen=True)
class Qos0Msg:
    topic: str
    payload: bytes
    qos: int = 0


class GatedStore(FakeStore):
    """A FakeStore whose commits wait for the test (`release`), noting the last sequence of each
    session as the commit found it (a real store serializes the snapshots there)."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(log)
        self.serialized: list[list[int]] = []
        self.gates: list[asyncio.Event] = []

    async def commit_batch(
        self, vehicles: Sequence[VehicleSession], events: Sequence[PendingEvent]
    ) -> list[StoredEvent]:
        self.serialized.append([v.last_sequence for v in vehicles])
        self.log.append("commit started")
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return await super().commit_batch(vehicles, events)

    def release(self) -> None:
        for gate in self.gates:
            gate.set()


class BlockingSink(RecordingSink):
    """A sink that waits for the test before it takes a batch of `blocked_sequence`."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(log)
        self.blocked_sequence = -1
        self.open = asyncio.Event()

    async def publish(self, records: Sequence[OutRecord]) -> int:
        if any(r.sequence == self.blocked_sequence for r in records):
            self.log.append("sink waits")
            await self.open.wait()
        return await super().publish(records)


def make(
    store: FakeStore,
    sink: RecordingSink,
    *,
    linger_s: float = 0.0,
    clock: ManualClock | None = None,
    metrics: Metrics | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    pause: Callable[[], None] = lambda: None,
    resume: Callable[[], None] = lambda: None,
    forwarded_at_ack: list[int] | None = None,
) -> tuple[Pipeline, list[int]]:
    """The pipeline; what was acknowledged (the size of each batch, in order).
    forwarded_at_ack: gets how many records the sink had at each acknowledgement."""
    acked: list[int] = []

    def ack(batch: Sequence[Message]) -> None:
        store.log.append("ack")
        acked.append(len(batch))
        if forwarded_at_ack is not None:
            forwarded_at_ack.append(len(forwarded(sink)))

    p = Pipeline(
        tracker=SessionTracker(), store=store, hub=EventHub(), telemetry=sink,
        metrics=metrics or Metrics(), clock=clock or ManualClock(), reference=REFERENCE,
        max_payload_bytes=4096, queue_messages=100, ack=ack, pause_reading=pause,
        resume_reading=resume, commit_linger_s=linger_s, sleep=sleep,
    )
    return p, acked


@contextlib.asynccontextmanager
async def running(p: Pipeline, *release: Callable[[], object]) -> AsyncIterator[None]:
    """`p.run()` as a task for the block; at its end `release` (gates the test holds), then the
    pipeline closes and its run returns (whatever the block asserted)."""
    runner = asyncio.create_task(p.run())
    try:
        yield
    finally:
        for open_gate in release:
            open_gate()
        p.close()
        await runner


def forwarded(sink: RecordingSink) -> list[int]:
    return [r.sequence for batch in sink.batches for r in batch]


async def test_batches_coming_while_a_commit_runs_are_forwarded_at_once_and_share_the_next_commit() -> None:
    log: list[str] = []
    store, sink = GatedStore(log), RecordingSink(log)
    p, acked = make(store, sink)
    async with running(p, store.release):
        p.on_batch([hello()])
        await turns_until(lambda: len(store.gates) == 1)
        store.release()
        await turns_until(lambda: len(acked) == 1)
        p.on_batch([telemetry(2, OFF)])
        await turns_until(lambda: len(store.gates) == 2)  # its commit runs, held by the test
        p.on_batch([telemetry(3, OFF)])
        await turns_until(lambda: forwarded(sink) == [2, 3])
        p.on_batch([telemetry(4, OFF)])
        await turns_until(lambda: forwarded(sink) == [2, 3, 4])
        assert len(acked) == 1  # the batches of 2, 3 and 4 are not durable yet
        store.release()
        await turns_until(lambda: len(store.gates) == 3)  # 3 and 4: one commit
        assert len(acked) == 2  # 2's commit is done: acknowledged; 3 and 4 not yet
        store.release()
        await turns_until(lambda: len(acked) == 4)
        assert store.serialized == [[1], [2], [4]]
        assert log[-4:] == ["commit started", "commit", "ack", "ack"]  # one commit, two acks


async def test_a_commit_waits_for_the_batch_whose_records_the_sink_does_not_have_yet() -> None:
    """The commit would store the replay window with that batch's sequence: after a crash its
    redelivery would be a duplicate, its records never handed over (sinks before the commit)."""
    log: list[str] = []
    store, sink = GatedStore(log), BlockingSink(log)
    sink.blocked_sequence = 4
    p, acked = make(store, sink)
    async with running(p, sink.open.set, store.release):
        p.on_batch([hello()])
        await turns_until(lambda: len(store.gates) == 1)
        store.release()
        await turns_until(lambda: len(acked) == 1)
        p.on_batch([telemetry(2, OFF)])
        await turns_until(lambda: len(store.gates) == 2)
        p.on_batch([telemetry(3, OFF)])
        await turns_until(lambda: forwarded(sink) == [2, 3])
        p.on_batch([telemetry(4, OFF)])
        await turns_until(lambda: "sink waits" in log)  # 4 is applied, its forward waits
        store.release()  # 2 committed; 3 is pending, the session already has 4
        await turns_until(lambda: len(acked) == 2)
        assert len(store.gates) == 2  # no commit while 4's records are not with the sink
        sink.open.set()
        await turns_until(lambda: len(store.gates) == 3)
        assert store.serialized[-1] == [4] and forwarded(sink) == [2, 3, 4]
        store.release()
        await turns_until(lambda: len(acked) == 4)


async def test_qos0_batches_linger_into_one_commit_that_a_qos1_batch_ends() -> None:
    log: list[str] = []
    store, sink = FakeStore(log), RecordingSink(log)
    p, acked = make(store, sink, linger_s=3600.0)  # never ends by itself within the test
    async with running(p):
        p.on_batch([hello()])  # a boot: entitlement updates, committed at once
        await turns_until(lambda: len(acked) == 1)
        for seq in (2, 3):
            m = telemetry(seq, OFF)
            p.on_batch([Qos0Msg(m.topic, m.payload)])
            await turns_until(lambda: forwarded(sink)[-1:] == [seq])  # noqa: B023 - awaited here
        p.on_batch([telemetry(4, OFF)])  # QoS 1: the broker may wait for its acknowledgement
        await turns_until(lambda: len(acked) == 4)
        assert len(store.commits) == 2  # the Hello's, then one for 2, 3 and 4
        assert store.sessions[VIN].last_sequence == 4


async def test_closing_commits_what_lingers() -> None:
    log: list[str] = []
    store, sink = FakeStore(log), RecordingSink(log)
    p, acked = make(store, sink, linger_s=3600.0)
    runner = asyncio.create_task(p.run())
    p.on_batch([hello()])
    await turns_until(lambda: len(acked) == 1)
    m = telemetry(2, OFF)
    p.on_batch([Qos0Msg(m.topic, m.payload)])
    await turns_until(lambda: forwarded(sink) == [2])
    p.close()
    await runner
    assert len(acked) == 2 and store.sessions[VIN].last_sequence == 2


async def test_a_large_socket_read_is_split_so_its_first_records_are_not_held_by_its_last() -> None:
    log: list[str] = []
    store, sink = FakeStore(log), RecordingSink(log)
    p, acked = make(store, sink)
    async with running(p):
        p.on_batch([hello()])
        await turns_until(lambda: len(acked) == 1)
        p.on_batch([telemetry(seq, OFF) for seq in range(2, 602)])  # one read, 600 messages
        await turns_until(lambda: sum(acked) == 601)
        assert [len(b) for b in sink.batches] == [GROUPED_BATCH, GROUPED_BATCH, 100]
        assert acked[1:] == [GROUPED_BATCH, GROUPED_BATCH, 100]  # in order, each once
        assert forwarded(sink) == list(range(2, 602))


class YieldingSink(RecordingSink):
    """A sink whose publish suspends once, as a JetStream publish awaits its acknowledgement."""

    async def publish(self, records: Sequence[OutRecord]) -> int:
        await asyncio.sleep(0)
        return await super().publish(records)


async def test_under_a_backlog_commits_and_acks_keep_pace_with_the_batches() -> None:
    """The committer takes the pending group between two batches: the acknowledgements, which
    the broker may wait for, are not held back until MAX_GROUP_MESSAGES are pending."""
    log: list[str] = []
    store, sink = FakeStore(log), YieldingSink(log)
    forwarded_at_ack: list[int] = []
    p, acked = make(store, sink, forwarded_at_ack=forwarded_at_ack)
    p.on_batch([hello()])
    for read in range(20):  # 20 socket reads of 100 QoS 1 messages, queued before the drain runs
        p.on_batch([telemetry(seq, OFF) for seq in range(2 + read * 100, 102 + read * 100)])
    async with running(p):
        await turns_until(lambda: sum(acked) == 2_001, limit=5_000)
        assert len(store.commits) >= 2_000 // (2 * GROUPED_BATCH)  # a commit every few batches
        # No acknowledgement waits for more than a few batches' worth of later records.
        acked_before = [sum(acked[:i]) for i in range(len(acked))]
        assert max(f - a for f, a in zip(forwarded_at_ack, acked_before, strict=True)) <= 3 * GROUPED_BATCH


async def test_a_commit_that_never_returns_leaves_a_backlog_that_liveness_calls_wedged() -> None:
    """Applied batches waiting for a hung commit are the backlog (liveness, the queued gauge):
    nothing is queued, yet nothing is acknowledged either."""
    log: list[str] = []
    clock, metrics = ManualClock(), Metrics()
    store, sink = GatedStore(log), RecordingSink(log)
    p, acked = make(store, sink, clock=clock, metrics=metrics)
    live = Liveness(clock=clock, wedge_after_s=60.0, backlog=lambda: p.queued,
                    progress=lambda: p.processed, excused=lambda: False)
    runner = asyncio.create_task(p.run())
    try:
        p.on_batch([hello()])
        await turns_until(lambda: len(store.gates) == 1)
        store.release()
        await turns_until(lambda: len(acked) == 1)
        p.on_batch([telemetry(2, OFF)])
        await turns_until(lambda: len(store.gates) == 2)  # this commit never returns
        p.on_batch([telemetry(3, OFF)])
        await turns_until(lambda: forwarded(sink) == [2, 3])
        assert p.queued == 2
        assert metrics.registry.get_sample_value("gateway_ingress_queued_messages") == 2
        assert live.wedged() is None
        clock.advance(59.0)
        assert live.wedged() is None
        clock.advance(1.0)
        assert live.wedged() == "pipeline wedged: 2 messages queued, none processed for 60 s"
    finally:
        p.close()
        while not runner.done():  # each later commit waits for its own release
            store.release()
            await asyncio.sleep(0)
        await runner
    assert p.queued == 0


async def test_reading_stays_paused_through_a_failed_commits_backoff_until_it_recovers() -> None:
    """R: nothing acknowledged is lost, and while the database is down what the broker has not
    sent stays with it: the queue draining during the first backoff does not resume reading."""
    log: list[str] = []
    events: list[str] = []
    store, sink = FakeStore(log), RecordingSink(log)
    delays: list[float] = []
    backoff_over = asyncio.Event()

    async def sleep(delay: float) -> None:  # the backoff's wait, ended by the test
        delays.append(delay)
        await backoff_over.wait()

    p, acked = make(store, sink, sleep=sleep, pause=lambda: events.append("pause"),
                    resume=lambda: events.append("resume"))
    async with running(p, backoff_over.set):
        p.on_batch([hello()])
        await turns_until(lambda: len(acked) == 1)
        store.fail = 1
        p.on_batch([telemetry(2, OFF)])
        await turns_until(lambda: delays == [0.1])  # failed, reading paused, in its backoff
        assert events == ["pause"]
        # The queue is empty; a batch read before the pause passes the drain's resume check.
        p.on_batch([telemetry(3, OFF)])
        await turns_until(lambda: forwarded(sink) == [2, 3])
        assert events == ["pause"] and len(acked) == 1
        backoff_over.set()
        await turns_until(lambda: len(acked) == 3 and events[-1:] == ["resume"])
        assert events == ["pause", "resume"]
        assert log.index("commit failed") < len(log) - log[::-1].index("commit")


class WatchedClock(ManualClock):
    """A ManualClock that notes each sleep it is asked for (to move it once the linger waits)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


async def test_the_linger_runs_on_the_pipelines_clock() -> None:
    log: list[str] = []
    clock = WatchedClock()
    store, sink = FakeStore(log), RecordingSink(log)
    p, acked = make(store, sink, linger_s=30.0, clock=clock)
    async with running(p):
        p.on_batch([hello()])
        await turns_until(lambda: len(acked) == 1)
        m = telemetry(2, OFF)
        p.on_batch([Qos0Msg(m.topic, m.payload)])
        await turns_until(lambda: forwarded(sink) == [2] and 30.0 in clock.sleeps)
        assert len(acked) == 1  # lingering
        clock.advance(30.0)  # no wall-clock time passes: the clock ends the linger
        await turns_until(lambda: len(acked) == 2)
        assert store.sessions[VIN].last_sequence == 2


async def test_a_commit_cancelled_midway_stays_pending_for_the_next_flush() -> None:
    log: list[str] = []
    store, sink = GatedStore(log), RecordingSink(log)
    p, acked = make(store, sink)
    runner = asyncio.create_task(p.run())
    p.on_batch([hello()])
    await turns_until(lambda: len(store.gates) == 1)  # the Hello's commit runs
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert acked == []
    store.release()
    store.gates.clear()
    flushed = asyncio.create_task(p.process([telemetry(2, OFF)]))  # commits without a committer
    await turns_until(lambda: len(store.gates) == 1)
    store.release()
    await flushed
    assert acked == [1, 1] and store.sessions[VIN].last_sequence == 2
