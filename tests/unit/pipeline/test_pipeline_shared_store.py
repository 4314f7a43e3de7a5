"""One car's messages on two gateways sharing one PostgreSQL store (gateway/pipeline/: refresh
before applying, re-apply on a conflicting commit). Two pipelines on two real PostgresStores of
one database; the race is made deterministic by running the other gateway's work (or a raw
write) right before this one's commit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import pytest

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, uplink_pb2, vehicles_pb2
from gateway.clock import ManualClock
from gateway.config import PROJECT_ROOT
from gateway.egress.record import OutRecord
from gateway.egress.telemetry import TelemetryFanout
from gateway.metrics import Metrics
from gateway.model import ChargingPlug, LockState, VehicleSession
from gateway.pipeline import MAX_REAPPLY, Message, Pipeline
from gateway.reference import ReferenceStore
from gateway.session.hub import EventHub
from gateway.session.ratelimit import CarLimits
from gateway.session.tracker import SessionTracker
from gateway.store.base import PendingEvent, StoredEvent
from gateway.store.postgres import PostgresStore

VIN = "WP0ZZZ99ZJS300011"
REFERENCE = ReferenceStore.load(PROJECT_ROOT)
Hook = Callable[[], Awaitable[None]]
# The Hello (1), the lock (2), the plug (3): each change once, in sequence order.
THREE_EVENTS = [
    (1, "online", ()), (2, "state_changed", ("state.lock",)), (3, "state_changed", ("state.charging_plug",)),
]


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int = 1  # as the broker delivers uplinks to the gateway


class RacedStore(PostgresStore):
    """The real store, with another writer's work run right before the next commits."""

    def __init__(self, *, url: str) -> None:
        super().__init__(url=url)
        self.before_commit: list[Hook] = []

    async def commit_batch(
        self, vehicles: Sequence[VehicleSession], events: Sequence[PendingEvent]
    ) -> list[StoredEvent]:
        if self.before_commit:
            await self.before_commit.pop(0)()
        return await super().commit_batch(vehicles, events)


class RecordingSink:
    """A telemetry sink (gateway/egress/sink.py TelemetrySink) that keeps what it was handed."""

    def __init__(self) -> None:
        self.records: list[telemetry_pb2.TelemetryRecord] = []

    async def publish(self, records: Sequence[OutRecord]) -> int:
        self.records.extend(telemetry_pb2.TelemetryRecord.FromString(r.data) for r in records)
        return 1


@dataclass
class Gw:
    pipeline: Pipeline
    store: RacedStore
    tracker: SessionTracker
    metrics: Metrics
    acked: list[Message] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    sink: RecordingSink | None = None

    def count(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
async def gateways(pg_url: str) -> AsyncIterator[Callable[..., Awaitable[Gw]]]:
    opened: list[RacedStore] = []

    async def start(burst: int = 100, recorded: bool = False) -> Gw:
        """recorded: the pipeline's telemetry sink keeps what it is handed (Gw.sink)."""
        store = RacedStore(url=pg_url)
        await store.open()
        opened.append(store)
        tracker = SessionTracker(await store.load_sessions())
        metrics = Metrics()
        acked: list[Message] = []
        waits: list[float] = []

        async def sleep(delay: float) -> None:
            waits.append(delay)

        sink = RecordingSink() if recorded else None
        pipeline = Pipeline(
            tracker=tracker, store=store, shared_store=store, hub=EventHub(),
            telemetry=sink or TelemetryFanout(queue_size=10), metrics=metrics, clock=ManualClock(),
            reference=REFERENCE, max_payload_bytes=4096, queue_messages=100, ack=acked.extend,
            pause_reading=lambda: None, resume_reading=lambda: None, sleep=sleep,
            limits=CarLimits(rate_per_s=1.0, burst=burst, hello_rate_per_s=1.0, hello_burst=5),
        )
        return Gw(pipeline, store, tracker, metrics, acked, waits, sink)

    yield start
    for store in opened:
        await store.close()


def envelope(seq: int) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=VIN, sequence=seq, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    env.privacy.mode = common_pb2.PRIVACY_MODE_OFF
    return env


def msg(env: uplink_pb2.Envelope) -> Msg:
    return Msg(f"v1/vehicles/{VIN}/up", env.SerializeToString())


def hello(seq: int) -> Msg:
    env = envelope(seq)
    env.hello.connection_id = 1
    env.hello.state.lock = common_pb2.LOCK_STATE_UNLOCKED
    env.hello.state.charging_plug = common_pb2.CHARGING_PLUG_DISCONNECTED
    return msg(env)


def lock(seq: int) -> Msg:
    env = envelope(seq)
    env.state_change.state.lock = common_pb2.LOCK_STATE_LOCKED
    return msg(env)


def plug(seq: int) -> Msg:
    env = envelope(seq)
    env.state_change.state.charging_plug = common_pb2.CHARGING_PLUG_CONNECTED
    return msg(env)


def heartbeat(seq: int) -> Msg:
    env = envelope(seq)
    env.heartbeat.SetInParent()
    return msg(env)


async def event_log(store: PostgresStore) -> list[tuple[int, str, tuple[str, ...]]]:
    """(sequence of the session with it, kind, changed fields) of each stored event."""
    events = [vehicles_pb2.VehicleEvent.FromString(e.payload) for e in await store.read_events(0, 100, VIN)]
    return [
        (e.vehicle.last_sequence, e.WhichOneof("kind") or "", tuple(e.state_changed.changed)) for e in events
    ]


async def test_a_batch_after_another_gateways_commit_is_applied_on_the_stored_car(
    gateways: Callable[..., Awaitable[Gw]],
) -> None:
    a, b = await gateways(), await gateways()
    await a.pipeline.process([hello(1)])
    await b.pipeline.process([lock(2)])  # b never saw the car: its refresh reads it
    await a.pipeline.process([plug(3)])
    session = a.tracker.get(VIN)
    assert session is not None and (session.state.lock, session.state.charging_plug) == (
        LockState.LOCKED, ChargingPlug.CONNECTED,
    )
    refreshed = "gateway_vehicles_refreshed_total"
    assert (a.count(refreshed), b.count(refreshed)) == (1, 1)
    assert a.count("gateway_store_conflicts_total") == 0
    assert await event_log(a.store) == THREE_EVENTS


async def test_a_conflicting_batch_is_applied_again_on_the_fresh_state_and_charged_once(
    gateways: Callable[..., Awaitable[Gw]],
) -> None:
    # a's limit: the Hello and the batch of two use 3 of 4 tokens; charged again on the
    # re-apply, one of the batch's messages would be dropped as rate_limited.
    a, b = await gateways(burst=4), await gateways()
    await a.pipeline.process([hello(1)])
    # a refreshes (nothing new), applies 2 and 3; then b commits 2 (its own copy of it) before
    # a's commit, which therefore conflicts.
    a.store.before_commit.append(lambda: b.pipeline.process([lock(2)]))
    batch = [lock(2), plug(3)]
    await a.pipeline.process(batch)
    assert a.acked[-2:] == batch
    assert a.count("gateway_store_conflicts_total") == 1
    assert a.count("gateway_messages_rejected_total", {"reason": "rate_limited"}) == 0
    assert a.count("gateway_messages_stale_total", {"outcome": "duplicate"}) == 1  # 2, b's by then
    stored = await a.store.get_vehicle(VIN)
    assert stored is not None and stored.last_sequence == 3
    assert (stored.state.lock, stored.state.charging_plug) == (LockState.LOCKED, ChargingPlug.CONNECTED)
    # Each change once: b's lock, then a's plug computed over the car with b's lock.
    assert await event_log(a.store) == THREE_EVENTS
    [*_, last] = [vehicles_pb2.VehicleEvent.FromString(e.payload) for e in await a.store.read_events(0, 10)]
    assert last.vehicle.state.lock == common_pb2.LOCK_STATE_LOCKED
    assert a.pipeline.processed == 3 and a.waits == []
    # One token left (the clock stands still): the next message passes, the one after not.
    await a.pipeline.process([heartbeat(4), heartbeat(5)])
    assert a.count("gateway_messages_rejected_total", {"reason": "rate_limited"}) == 1


def samples(seq: int, n: int) -> Msg:
    env = envelope(seq)
    env.telemetry.service = "car-finder"
    for k in range(n):
        env.telemetry.samples.add().location.latitude = 48.0 + k
    return msg(env)


async def test_a_conflicting_batch_hands_each_telemetry_record_to_the_sink_once(
    gateways: Callable[..., Awaitable[Gw]],
) -> None:
    a, b = await gateways(recorded=True), await gateways()
    await a.pipeline.process([hello(1)])
    a.store.before_commit.append(lambda: b.pipeline.process([lock(2)]))
    await a.pipeline.process([lock(2), samples(3, 2), samples(4, 1)])  # applied twice
    assert a.count("gateway_store_conflicts_total") == 1
    assert a.sink is not None
    handed = [(r.vin, r.sequence, r.sample.location.latitude) for r in a.sink.records]
    assert handed == [(VIN, 3, 48.0), (VIN, 3, 49.0), (VIN, 4, 48.0)]


async def test_conflicts_beyond_the_bound_wait_as_failed_commits_and_the_batch_still_commits(
    gateways: Callable[..., Awaitable[Gw]], pg_url: str
) -> None:
    a = await gateways()
    await a.pipeline.process([hello(1)])

    async def other_writer() -> None:  # another gateway rewriting the car as it is
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("UPDATE vehicles SET version = version + 1 WHERE vin = $1", VIN)
        finally:
            await conn.close()

    conflicts = MAX_REAPPLY + 2
    a.store.before_commit.extend([other_writer] * conflicts)
    await a.pipeline.process([lock(2)])
    assert a.count("gateway_store_conflicts_total") == conflicts
    assert len(a.waits) == conflicts - MAX_REAPPLY  # the first ones applied again at once
    assert a.count("gateway_store_commit_retries_total", {"step": "store"}) == conflicts - MAX_REAPPLY
    stored = await a.store.get_vehicle(VIN)
    assert stored is not None and (stored.last_sequence, stored.state.lock) == (2, LockState.LOCKED)
    assert [kind for _, kind, _ in await event_log(a.store)] == ["online", "state_changed"]


async def test_a_car_first_created_by_another_gateway_during_the_commit_is_not_duplicated(
    gateways: Callable[..., Awaitable[Gw]],
) -> None:
    a, b = await gateways(), await gateways()
    # Both get the car's first messages; b commits its Hello while a commits its copy.
    a.store.before_commit.append(lambda: b.pipeline.process([hello(1)]))
    await a.pipeline.process([hello(1), lock(2)])
    assert a.count("gateway_store_conflicts_total") == 1
    assert await event_log(a.store) == [(1, "online", ()), (2, "state_changed", ("state.lock",))]
    assert a.tracker.online_by_bearer[next(iter(a.tracker.online_by_bearer))] == 1


def telemetry(seq: int) -> Msg:
    env = envelope(seq)
    env.telemetry.service = "car-finder"
    env.telemetry.samples.add().signals.add(name="soc_pct", number=50.0)
    return msg(env)


async def test_a_slots_backlog_far_behind_the_car_keeps_its_data_and_changes_no_state(
    gateways: Callable[..., Awaitable[Gw]],
) -> None:
    # a's slot was handed over with telemetry 2 still queued; b has moved the car on by more
    # than the replay window (a heartbeat at 100, then a lock at 101) before a gets it.
    a, b = await gateways(), await gateways()
    await a.pipeline.process([hello(1)])
    await b.pipeline.process([heartbeat(100), lock(101)])
    await a.pipeline.process([telemetry(2)])
    assert a.count("gateway_messages_stale_total", {"outcome": "too_old"}) == 1
    # Kept, as a late message's data (no subscriber here: counted as such, not dropped).
    assert a.count("gateway_telemetry_records_total", {"outcome": "no_subscriber"}) == 1
    stored = await a.store.get_vehicle(VIN)
    assert stored is not None and stored.last_sequence == 101 and stored.state.lock == LockState.LOCKED
