"""The pipeline with fakes at its edges: ordering of commit and acknowledgement, redaction."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, uplink_pb2
from gateway.clock import ManualClock
from gateway.config import PROJECT_ROOT
from gateway.egress.telemetry import TelemetryFanout, TelemetrySubscriber
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.pipeline import Message, Pipeline
from gateway.reference import ReferenceStore
from gateway.session.hub import EventHub
from gateway.session.tracker import SessionTracker
from gateway.store.base import PendingEvent, StoredEvent, StoreError

VIN = "WP0ZZZ99ZJS300001"
REFERENCE = ReferenceStore.load(PROJECT_ROOT)  # the shipped sim_profiles/ and roaming/ data


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int = 1  # as the broker delivers uplinks to the gateway


class FakeStore:
    """An in-memory Store (satisfies gateway.store.base.Store) that writes what happens to `log`.

    The log is shared with the test's ack callback, so the order of commit and acknowledgement is
    visible. A commit is logged when it has completed (after a yield to the loop, as a real
    database write would), so an ack sent before the commit finished shows up first.
    """

    def __init__(self, log: list[str] | None = None, fail: int = 0) -> None:
        """fail: this many commits fail (StoreError) before they succeed again."""
        self.fail = fail
        self.log: list[str] = [] if log is None else log
        self.commits: list[tuple[list[str], list[str]]] = []
        self.sessions: dict[str, VehicleSession] = {}
        self.events: list[StoredEvent] = []
        self._dedupe: set[tuple[str, str]] = set()
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def probe(self) -> None:
        if self.fail:
            raise StoreError("database unreachable")

    async def load_sessions(self) -> list[VehicleSession]:
        return list(self.sessions.values())

    async def get_vehicle(self, vin: str) -> VehicleSession | None:
        return self.sessions.get(vin)

    async def list_vehicles(self, after: str, limit: int) -> list[VehicleSession]:
        return [self.sessions[v] for v in sorted(self.sessions) if v > after][:limit]

    async def commit_batch(
        self, vehicles: Sequence[VehicleSession], events: Sequence[PendingEvent]
    ) -> list[StoredEvent]:
        await asyncio.sleep(0)  # a real write yields to the loop; an early ack would run here
        if self.fail:
            self.fail -= 1
            self.log.append("commit failed")
            raise StoreError("database unreachable")
        written: list[StoredEvent] = []
        for e in events:
            if e.dedupe_key and (e.vin, e.dedupe_key) in self._dedupe:
                continue  # R28: recorded once
            if e.dedupe_key:
                self._dedupe.add((e.vin, e.dedupe_key))
            written.append(StoredEvent(len(self.events) + len(written) + 1, e.vin, e.payload, e.kind))
        self.sessions.update((v.vin, v) for v in vehicles)
        self.events.extend(written)
        self.commits.append(([v.vin for v in vehicles], [e.kind for e in events]))
        self.log.append("commit")
        return written

    async def read_events(self, after: int, limit: int, vin: str = "") -> list[StoredEvent]:
        found = [e for e in self.events if e.cursor > after and (not vin or e.vin == vin)]
        return found[:limit]

    async def first_cursor(self) -> int:
        return self.events[0].cursor if self.events else 0

    async def prune_events(self, keep: int) -> int:
        drop = max(0, len(self.events) - keep)
        del self.events[:drop]
        return drop


def make(
    store: FakeStore,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    pause: Callable[[], None] = lambda: None,
    resume: Callable[[], None] = lambda: None,
    outcome: Callable[[str, BaseException | None], None] | None = None,
    metrics: Metrics | None = None,
    clock: ManualClock | None = None,
) -> tuple[Pipeline, list[Sequence[Message]], TelemetryFanout]:
    acked: list[Sequence[Message]] = []

    def ack(batch: Sequence[Message]) -> None:
        store.log.append("ack")
        acked.append(batch)

    fanout = TelemetryFanout(queue_size=10)
    p = Pipeline(
        tracker=SessionTracker(), store=store, hub=EventHub(), telemetry=fanout,
        metrics=metrics or Metrics(), clock=clock or ManualClock(), reference=REFERENCE,
        max_payload_bytes=4096, queue_messages=4,
        ack=ack, pause_reading=pause, resume_reading=resume, sleep=sleep, outcome=outcome,
    )
    return p, acked, fanout


def next_batch(sub: TelemetrySubscriber) -> telemetry_pb2.TelemetryRecords:
    batch = sub.queue.get_nowait()
    assert batch is not None, "the stream ended where a batch was expected"
    return telemetry_pb2.TelemetryRecords.FromString(batch)


def hello(seq: int = 1, privacy: common_pb2.PrivacyMode.ValueType = common_pb2.PRIVACY_MODE_OFF) -> Msg:
    env = uplink_pb2.Envelope(vin=VIN, sequence=seq, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    env.privacy.mode = privacy
    env.hello.connection_id = 1
    return Msg(f"v1/vehicles/{VIN}/up", env.SerializeToString())


def telemetry(seq: int, privacy: common_pb2.PrivacyMode.ValueType) -> Msg:
    env = uplink_pb2.Envelope(vin=VIN, sequence=seq, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    env.privacy.mode = privacy
    env.telemetry.service = "car-finder"
    env.telemetry.samples.add().location.latitude = 48.8
    return Msg(f"v1/vehicles/{VIN}/up", env.SerializeToString())


def records(batch: bytes | None) -> list[telemetry_pb2.TelemetryRecord]:
    assert batch is not None
    return list(telemetry_pb2.TelemetryRecords.FromString(batch).records)


async def test_batch_is_acknowledged_after_its_commit() -> None:
    store = FakeStore()
    p, acked, _ = make(store)
    await p.process([hello()])
    assert store.commits == [([VIN], ["online"])] and len(acked) == 1
    assert store.log == ["commit", "ack"]  # acked first, a crash in between would lose the batch


async def test_a_lone_message_is_committed_and_acknowledged_at_once_without_a_batch_timer() -> None:
    """No batch timer: a broker that keeps one QoS 1 message in flight (ejabberd) sends the
    next only after this PUBACK, so a lone message held for company would cap the intake at one
    message per timer period (README "Brokers other than Mosquitto"). The pipeline runs as in
    the gateway; the message is acknowledged within a few turns of the event loop, no time
    passing (a timer, however short, would need the loop to sleep)."""
    store = FakeStore()
    p, acked, _ = make(store)
    runner = asyncio.create_task(p.run())
    try:
        p.on_batch([hello()])
        for _ in range(50):  # loop turns, not time: the commit and ack are all this loop does
            if acked:
                break
            await asyncio.sleep(0)
        assert [len(b) for b in acked] == [1] and store.log == ["commit", "ack"]
    finally:
        p.close()
        await runner


async def test_batch_whose_commit_fails_is_not_acknowledged_until_a_retry_commits_it() -> None:
    store = FakeStore(fail=3)
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        store.log.append("wait")

    p, acked, _ = make(store, sleep=sleep)
    await p.process([hello()])
    assert store.log == ["commit failed", "wait"] * 3 + ["commit", "ack"]
    assert waits == [0.1, 0.2, 0.4] and len(acked) == 1
    # The message was applied to the session once: the retried commit wrote it as it was.
    assert store.commits == [([VIN], ["online"])]
    assert p.processed == 1


async def test_commit_backoff_doubles_up_to_its_bound() -> None:
    from gateway.pipeline import COMMIT_BACKOFF

    delays = COMMIT_BACKOFF.delays()
    assert [next(delays) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


async def test_failing_commit_pauses_reading_and_the_drained_pipeline_resumes_it() -> None:
    store = FakeStore(fail=2)
    events: list[str] = []
    gate = asyncio.Event()

    async def sleep(_delay: float) -> None:
        events.append("wait")
        await gate.wait()  # the database stays down until the test lets it come back

    p, acked, _ = make(store, sleep=sleep, pause=lambda: events.append("pause"),
                       resume=lambda: events.append("resume"))
    task = asyncio.create_task(p.run())
    p.on_batch([hello(1)])
    while "wait" not in events:  # noqa: ASYNC110 - stepping another task
        await asyncio.sleep(0)
    assert events == ["pause", "wait"] and acked == []  # not read further, not acknowledged
    p.on_batch([hello(2)])  # already read from the socket before the pause: queued, kept
    gate.set()
    while p.processed < 2:  # noqa: ASYNC110 - stepping another task
        await asyncio.sleep(0)
    assert events == ["pause", "wait", "wait", "resume"]
    assert [len(b) for b in acked] == [1, 1]
    p.close()
    await task


async def test_a_full_queue_shows_as_paused_queued_and_paused_seconds_in_metrics() -> None:
    # What an SRE sees of an overload: the depth of the queue, that reading is paused, and for
    # how long it was (README "Backpressure").
    metrics, clock = Metrics(), ManualClock()
    events: list[str] = []
    p, acked, _ = make(FakeStore(), metrics=metrics, clock=clock, pause=lambda: events.append("pause"),
                       resume=lambda: events.append("resume"))

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    assert (sample("gateway_ingress_paused"), sample("gateway_ingress_queued_messages")) == (0, 0)
    p.on_batch([hello(1), hello(2)])
    assert events == [] and sample("gateway_ingress_queued_messages") == 2
    p.on_batch([hello(3), hello(4), hello(5)])  # queue_messages=4 reached: reading pauses
    assert events == ["pause"]
    assert sample("gateway_ingress_paused") == 1 and sample("gateway_ingress_queued_messages") == 5
    assert sample("gateway_ingress_backpressure_total") == 1
    clock.advance(3.0)  # the pipeline is busy elsewhere for 3 s before it drains the queue
    task = asyncio.create_task(p.run())
    # The drain loop resumes reading once it has handed the batch over; the committer may ack
    # it a step earlier (a Hello batch is committed before the drain goes on): step until both.
    for _ in range(1_000):
        if p.processed >= 5 and events[-1] == "resume":
            break
        await asyncio.sleep(0)
    assert events == ["pause", "resume"] and sum(len(b) for b in acked) == 5
    assert sample("gateway_ingress_paused") == 0 and sample("gateway_ingress_queued_messages") == 0
    assert sample("gateway_ingress_paused_seconds_total") == 3.0
    p.close()
    await task


async def test_outcome_of_each_commit_is_reported_for_readiness() -> None:
    store = FakeStore(fail=1)
    outcomes: list[tuple[str, str]] = []

    async def no_wait(_delay: float) -> None:
        return None

    metrics = Metrics()
    p, _, _ = make(store, sleep=no_wait, metrics=metrics,
                   outcome=lambda c, e: outcomes.append((c, "ok" if e is None else str(e))))
    await p.process([hello()])
    assert outcomes == [("store", "database unreachable"), ("store", "ok")]
    retries = metrics.registry.get_sample_value("gateway_store_commit_retries_total", {"step": "store"})
    assert retries == 1


async def test_rejected_messages_are_acknowledged_without_a_commit() -> None:
    store = FakeStore()
    p, acked, _ = make(store)
    await p.process([Msg(f"v1/vehicles/{VIN}/up", b"\xff\xff")])
    assert store.log == ["ack"] and len(acked) == 1  # nothing to keep; redelivery would not help


async def test_location_is_withheld_while_privacy_covers_all_services() -> None:
    p, _, fanout = make(FakeStore())
    sub = fanout.subscribe(frozenset())
    await p.process([hello(1), telemetry(2, common_pb2.PRIVACY_MODE_ALL_SERVICES)])
    [record] = next_batch(sub).records
    assert record.location_withheld and not record.sample.HasField("location")


async def test_location_flows_while_privacy_is_off() -> None:
    p, _, fanout = make(FakeStore())
    sub = fanout.subscribe(frozenset())
    await p.process([hello(1), telemetry(2, common_pb2.PRIVACY_MODE_OFF)])
    [record] = next_batch(sub).records
    assert not record.location_withheld and record.sample.location.latitude == pytest.approx(48.8)


async def test_backpressure_pauses_reading_by_queued_messages_and_resumes_when_drained() -> None:
    events: list[str] = []
    p = Pipeline(
        tracker=SessionTracker(), store=FakeStore(), hub=EventHub(),
        telemetry=TelemetryFanout(queue_size=10), metrics=Metrics(), clock=ManualClock(),
        reference=REFERENCE, max_payload_bytes=4096, queue_messages=10,
        ack=lambda _m: None, pause_reading=lambda: events.append("pause"),
        resume_reading=lambda: events.append("resume"),
    )
    p.on_batch([hello(1)] * 6)
    assert events == []
    p.on_batch([hello(2)] * 6)  # 12 queued >= 10
    assert events == ["pause"]
    task = asyncio.create_task(p.run())
    while p.processed < 12:  # noqa: ASYNC110 - stepping another task
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert events == ["pause", "resume"]
    p.close()
    await task


async def test_rejected_envelope_leaves_the_replay_window_so_the_cars_next_message_is_served() -> None:
    tracker = SessionTracker()
    metrics = Metrics()
    fanout = TelemetryFanout(queue_size=10)
    p = Pipeline(
        tracker=tracker, store=FakeStore(), hub=EventHub(), telemetry=fanout,
        metrics=metrics, clock=ManualClock(), reference=REFERENCE, max_payload_bytes=4096, queue_messages=4,
        ack=lambda _m: None, pause_reading=lambda: None, resume_reading=lambda: None,
    )
    sub = fanout.subscribe(frozenset())
    bad = uplink_pb2.Envelope.FromString(telemetry(2, common_pb2.PRIVACY_MODE_OFF).payload)
    bad.telemetry.samples[0].location.latitude = float("nan")
    await p.process([hello(1), Msg(f"v1/vehicles/{VIN}/up", bad.SerializeToString())])
    sample = metrics.registry.get_sample_value
    assert sample("gateway_messages_rejected_total", {"reason": "bad_location"}) == 1
    assert sub.queue.empty()  # nothing of the rejected envelope was forwarded
    session = tracker.get(VIN)
    assert session is not None and session.last_sequence == 1  # its sequence was never seen
    # The same sequence, now valid, is new to the replay window: served, not dropped as a repeat.
    await p.process([telemetry(2, common_pb2.PRIVACY_MODE_OFF)])
    [record] = records(sub.queue.get_nowait())
    assert record.sequence == 2 and record.sample.location.latitude == pytest.approx(48.8)


async def test_a_record_has_no_sent_at_when_the_car_sent_none() -> None:
    # validate.py accepts an envelope without sent_at (a car whose clock is not set yet); its
    # records must not be dated 1970-01-01.
    p, _, fanout = make(FakeStore())
    sub = fanout.subscribe(frozenset())
    await p.process([hello(1), telemetry(2, common_pb2.PRIVACY_MODE_OFF)])
    [record] = next_batch(sub).records
    assert not record.HasField("sent_at")


async def test_an_entitlement_conflict_is_retried_without_calling_the_ledger_down() -> None:
    from gateway.entitlements.ledger import VersionConflict
    from gateway.entitlements.vehicle import VehicleUpdate

    store = FakeStore()
    calls: list[int] = []
    told: list[tuple[str, BaseException | None]] = []

    async def engine(updates: Sequence[VehicleUpdate]) -> None:
        calls.append(len(updates))
        if len(calls) == 1:  # another gateway changed it first; the engine read it again
            raise VersionConflict("entitlement e-1: changed since read (version 3)", ["e-1"])

    async def no_wait(_delay: float) -> None:
        return None

    metrics = Metrics()
    p = Pipeline(
        tracker=SessionTracker(), store=store, hub=EventHub(), telemetry=TelemetryFanout(queue_size=10),
        metrics=metrics, clock=ManualClock(), reference=REFERENCE, max_payload_bytes=4096,
        queue_messages=4, ack=lambda _b: None, pause_reading=lambda: None, resume_reading=lambda: None,
        entitlements=engine, sleep=no_wait, outcome=lambda c, e: told.append((c, e)),
    )
    await p.process([hello()])
    assert calls == [1, 1]
    assert store.commits == [([VIN], ["online"])]
    assert all(error is None for _, error in told)  # readiness never heard of an outage
    retries = metrics.registry.get_sample_value
    assert retries("gateway_store_commit_retries_total", {"step": "entitlements"}) == 1


async def test_a_ledger_failure_retries_the_engine_step_and_the_store_commits_once() -> None:
    from gateway.entitlements.ledger import LedgerError
    from gateway.entitlements.vehicle import VehicleUpdate

    store = FakeStore()
    calls: list[int] = []

    async def engine(updates: Sequence[VehicleUpdate]) -> None:
        calls.append(len(updates))
        if len(calls) == 1:
            raise LedgerError("ledger unreachable")

    async def no_wait(_delay: float) -> None:
        return None

    acked: list[Sequence[Message]] = []
    p = Pipeline(
        tracker=SessionTracker(), store=store, hub=EventHub(), telemetry=TelemetryFanout(queue_size=10),
        metrics=Metrics(), clock=ManualClock(), reference=REFERENCE, max_payload_bytes=4096,
        queue_messages=4, ack=acked.append, pause_reading=lambda: None, resume_reading=lambda: None,
        entitlements=engine, sleep=no_wait,
    )
    await p.process([hello()])
    assert calls == [1, 1]  # the same update again, not the message applied again
    assert store.commits == [([VIN], ["online"])] and len(acked) == 1


async def test_a_boot_reported_late_still_reaches_the_entitlement_engine_as_a_boot() -> None:
    """R13: a Hello with boot=true that arrives after the car's later messages (a dead gateway's
    slot drained after a failover) is a LATE arrival, whose state does not apply; the boot it
    reports happened all the same, and the car is online: the engine must hear of it, or a
    pending service waits for yet another restart."""
    from gateway.entitlements.vehicle import VehicleUpdate

    booted: list[int] = []

    async def engine(updates: Sequence[VehicleUpdate]) -> None:
        booted.extend(u.session.last_sequence for u in updates if u.booted_online)

    p = Pipeline(
        tracker=SessionTracker(), store=FakeStore(), hub=EventHub(), telemetry=TelemetryFanout(queue_size=10),
        metrics=Metrics(), clock=ManualClock(), reference=REFERENCE, max_payload_bytes=4096,
        queue_messages=4, ack=lambda _b: None, pause_reading=lambda: None, resume_reading=lambda: None,
        entitlements=engine,
    )
    late_boot = uplink_pb2.Envelope.FromString(hello(2).payload)
    late_boot.hello.boot = True
    await p.process([hello(1)])  # online, no boot
    await p.process([telemetry(3, common_pb2.PRIVACY_MODE_OFF)])
    await p.process([Msg(f"v1/vehicles/{VIN}/up", late_boot.SerializeToString())])
    assert booted == [3]  # the session as the late Hello left it: still at sequence 3
