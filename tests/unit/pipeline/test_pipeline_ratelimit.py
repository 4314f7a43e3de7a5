"""Per-car limits in the pipeline: one car over its limit, the others served, the excess counted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway._gen.telematics.v1 import common_pb2, telemetry_pb2, uplink_pb2
from gateway.clock import ManualClock
from gateway.config import PROJECT_ROOT
from gateway.egress.telemetry import TelemetryFanout, TelemetrySubscriber
from gateway.metrics import Metrics
from gateway.pipeline import Message, Pipeline
from gateway.reference import ReferenceStore
from gateway.session.hub import EventHub
from gateway.session.quarantine import FloodQuarantine
from gateway.session.ratelimit import CarLimits
from gateway.session.tracker import SessionTracker
from gateway.store.sqlite import SqliteStore

FLOODER = "WP0ZZZ99ZJS300001"
QUIET = "WP0ZZZ99ZJS300002"
REFERENCE = ReferenceStore.load(PROJECT_ROOT)
BURST = 5
HELLO_BURST = 2


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    qos: int = 1  # as the broker delivers uplinks to the gateway


class Orders:
    """Records what the pipeline tells the quarantine's executor (QuarantineOrders.changed)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def changed(self, quarantined: Sequence[str], released: Sequence[str]) -> None:
        self.calls.append((list(quarantined), list(released)))


@dataclass
class Rig:
    pipeline: Pipeline
    clock: ManualClock
    metrics: Metrics
    sub: TelemetrySubscriber
    acked: list[Message]
    limits: CarLimits
    orders: Orders

    def rejected(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value("gateway_messages_rejected_total", {"reason": reason})
        assert value is not None
        return value

    def forwarded(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        while not self.sub.queue.empty():
            batch = self.sub.queue.get_nowait()
            assert batch is not None
            out.extend((r.vin, r.sequence) for r in telemetry_pb2.TelemetryRecords.FromString(batch).records)
        return out


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteStore(path=tmp_path / "gateway.db")
    await store.open()
    fanout = TelemetryFanout(queue_size=100)
    metrics = Metrics()
    clock = ManualClock()
    acked: list[Message] = []

    def ack(batch: Sequence[Message]) -> None:
        acked.extend(batch)

    limits = CarLimits(rate_per_s=10.0, burst=BURST, hello_rate_per_s=1.0, hello_burst=HELLO_BURST)
    orders = Orders()
    pipeline = Pipeline(
        tracker=SessionTracker(), store=store, hub=EventHub(), telemetry=fanout, metrics=metrics,
        clock=clock, reference=REFERENCE, max_payload_bytes=4096, queue_messages=100, ack=ack,
        pause_reading=lambda: None, resume_reading=lambda: None, limits=limits,
        quarantine_changed=orders.changed,
    )
    yield Rig(pipeline, clock, metrics, fanout.subscribe(frozenset()), acked, limits, orders)
    await store.close()


def envelope(vin: str, seq: int) -> uplink_pb2.Envelope:
    env = uplink_pb2.Envelope(vin=vin, sequence=seq, bearer=common_pb2.BEARER_EMBEDDED_SIM)
    env.privacy.mode = common_pb2.PRIVACY_MODE_OFF
    return env


def telemetry(vin: str, seq: int, epoch: int = 0) -> Msg:
    env = envelope(vin, seq)
    env.sequence_epoch = epoch
    env.telemetry.service = "car-finder"
    env.telemetry.samples.add().signals.add(name="soc_pct", number=50.0)
    return Msg(f"v1/vehicles/{vin}/up", env.SerializeToString())


def hello(vin: str, seq: int, epoch: int = 0) -> Msg:
    env = envelope(vin, seq)
    env.sequence_epoch = epoch
    env.hello.connection_id = seq
    return Msg(f"v1/vehicles/{vin}/up", env.SerializeToString())


async def test_a_flooding_car_loses_its_excess_and_the_other_car_is_served_in_full(rig: Rig) -> None:
    flood = [telemetry(FLOODER, seq) for seq in range(1, 21)]
    quiet = [telemetry(QUIET, seq) for seq in range(1, 4)]
    # Interleaved in one batch: the quiet car's messages arrive while the flood is under way.
    await rig.pipeline.process([*flood[:10], *quiet, *flood[10:]])
    got = rig.forwarded()
    assert [s for v, s in got if v == QUIET] == [1, 2, 3]
    assert [s for v, s in got if v == FLOODER] == list(range(1, BURST + 1))  # the burst, in order
    assert rig.rejected("rate_limited") == 20 - BURST
    assert len(rig.acked) == 23  # every QoS 1 message is acknowledged to the broker, dropped or not


async def test_bad_payloads_use_the_cars_tokens_too(rig: Rig) -> None:
    garbage = Msg(f"v1/vehicles/{FLOODER}/up", b"\xff\x00not a protobuf")
    await rig.pipeline.process([garbage] * 12)
    assert rig.rejected("malformed_protobuf") == BURST  # decoded only within the limit
    assert rig.rejected("rate_limited") == 12 - BURST
    await rig.pipeline.process([telemetry(FLOODER, 1)])  # time stands still: still limited
    assert rig.rejected("rate_limited") == 12 - BURST + 1


async def test_the_bucket_refills_on_the_pipeline_clock(rig: Rig) -> None:
    await rig.pipeline.process([telemetry(FLOODER, seq) for seq in range(1, 11)])
    assert rig.rejected("rate_limited") == 10 - BURST
    rig.forwarded()
    rig.clock.advance(0.2)  # 10/s: two tokens
    await rig.pipeline.process([telemetry(FLOODER, seq) for seq in range(11, 15)])
    assert [s for _, s in rig.forwarded()] == [11, 12]
    assert rig.rejected("rate_limited") == 10 - BURST + 2


async def test_a_reconnect_storm_of_one_car_is_limited_by_its_hello_bucket(rig: Rig) -> None:
    await rig.pipeline.process([hello(FLOODER, 1), hello(FLOODER, 2), hello(FLOODER, 3), hello(QUIET, 1)])
    assert rig.rejected("hello_rate_limited") == 1  # the third Hello of the flooding car
    assert rig.rejected("rate_limited") == 0
    received = rig.metrics.registry.get_sample_value("gateway_messages_received_total", {"kind": "hello"})
    assert received == HELLO_BURST + 1  # the quiet car's Hello has its own bucket


async def test_a_backlog_delivered_after_the_session_resumed_is_not_dropped_then_limits_apply_again(
    rig: Rig,
) -> None:
    # The broker delivers what it queued while the gateway was away, at the gateway's pace: a
    # car's backlog may be many times its burst without the car ever having flooded.
    rig.limits.catch_up(rig.clock.now(), 60)
    await rig.pipeline.process([telemetry(FLOODER, seq) for seq in range(1, 4 * BURST + 1)])
    assert [s for _, s in rig.forwarded()] == list(range(1, 4 * BURST + 1))
    assert rig.rejected("rate_limited") == 0
    rig.clock.advance(60)  # the catch-up window is over: a flood is a flood again
    await rig.pipeline.process([telemetry(FLOODER, seq) for seq in range(4 * BURST + 1, 6 * BURST + 1)])
    assert rig.rejected("rate_limited") == BURST


async def test_a_hello_of_a_reset_head_unit_passes_even_when_the_hello_bucket_is_empty(rig: Rig) -> None:
    await rig.pipeline.process([hello(FLOODER, seq, epoch=1) for seq in (1, 2, 3)])
    assert rig.rejected("hello_rate_limited") == 1  # the storm of one install is limited
    # The head unit is reset: a new epoch, counting from 1. Dropping its Hello would leave every
    # later envelope of the new epoch as other_epoch (never applied, never seen as alive).
    await rig.pipeline.process([hello(FLOODER, 1, epoch=2), telemetry(FLOODER, 2, epoch=2)])
    assert rig.rejected("hello_rate_limited") == 1
    registry = rig.metrics.registry
    assert registry.get_sample_value("gateway_messages_received_total", {"kind": "hello"}) == HELLO_BURST + 1
    # The telemetry is applied in the new epoch, not set aside as an unknown epoch's.
    assert registry.get_sample_value("gateway_messages_stale_total", {"outcome": "other_epoch"}) == 0


EXCESS = 3


async def test_a_car_far_over_its_limit_is_quarantined_then_dropped_whole_until_its_time_is_up(
    rig: Rig,
) -> None:
    orders = rig.orders
    rig.limits.quarantine = FloodQuarantine(excess=EXCESS, window_s=10, duration_s=60)
    await rig.pipeline.process([telemetry(FLOODER, seq) for seq in range(1, BURST + EXCESS + 2)])
    assert orders.calls == [([FLOODER], [])]  # once, after the batch
    assert rig.rejected("rate_limited") == EXCESS + 1
    rig.forwarded()
    # Quarantined: even a message its refilled bucket would let through is dropped (an external
    # broker keeps forwarding them), and the quiet car is served.
    rig.clock.advance(30)
    await rig.pipeline.process([telemetry(FLOODER, 100), telemetry(QUIET, 1)])
    assert rig.rejected("quarantined") == 1
    assert rig.forwarded() == [(QUIET, 1)]
    assert rig.pipeline.presence_due() is False
    rig.clock.advance(30)
    assert rig.pipeline.presence_due() is True  # a tick lets it in even when nothing arrives
    await rig.pipeline.process([])
    assert orders.calls[-1] == ([], [FLOODER])
    await rig.pipeline.process([telemetry(FLOODER, 101)])
    assert rig.forwarded() == [(FLOODER, 101)]
