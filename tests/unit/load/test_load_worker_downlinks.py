"""load/worker.py's downlink side: a car acks every EntitlementSet (R13) and, while the
restart storm watches a service, the worker times boot Hello -> the first set holding it."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator

import pytest

from gateway import topics
from gateway._gen.telematics.v1 import downlink_pb2, uplink_pb2
from load import frames
from load.fleet import generate_fleet
from load.worker import SETS, SLOTS, CarConn, CarState, Worker, WorkerSpec

SERVICE = "remote-services"


class RecordingTransport(asyncio.Transport):
    """Collects what the car writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data


@pytest.fixture
def worker() -> Iterator[Worker]:
    parent, child = multiprocessing.Pipe()
    counters: list[int] = [0] * SLOTS
    yield Worker(WorkerSpec(0, "127.0.0.1", 1, "", generate_fleet(2, seed=3)), child, counters)
    parent.close()
    child.close()


def attach(worker: Worker, cs: CarState) -> tuple[CarConn, RecordingTransport]:
    conn = CarConn(worker, cs)
    transport = RecordingTransport()
    conn.connection_made(transport)
    cs.conn = conn
    return conn, transport


def set_frame(vin: str, version: int, *items: tuple[str, str], packet_id: int = 7) -> bytes:
    down = downlink_pb2.Downlink(vin=vin)
    down.entitlement_set.version = version
    for entitlement_id, service in items:
        down.entitlement_set.items.add(entitlement_id=entitlement_id, service_id=service)
    return frames.publish(topics.downlink(vin), down.SerializeToString(), qos=1, packet_id=packet_id)


def sent(transport: RecordingTransport) -> list[frames.Packet]:
    return frames.FrameReader().feed(bytes(transport.written))


def acks(transport: RecordingTransport) -> list[uplink_pb2.EntitlementAck]:
    out = []
    for p in sent(transport):
        if p.kind == frames.PUBLISH:
            env = uplink_pb2.Envelope.FromString(frames.parse_publish(p)[2])
            out.append(env.entitlement_ack)
    return out


async def test_a_set_with_the_watched_service_after_the_boot_is_timed_pubacked_and_acked(
        worker: Worker) -> None:
    cs = worker.cars[0]
    await worker.watch(SERVICE, [cs.car.vin])
    conn, transport = attach(worker, cs)
    cs.boot_at = 1.0  # the boot Hello went out at perf_counter 1.0; the set arrives "now"
    conn.data_received(set_frame(cs.car.vin, 3, ("e-1", SERVICE), ("e-0", "car-finder")))
    assert cs.set_ms > 0
    assert worker.counters[SETS] == 1
    assert [p.packet_id for p in sent(transport) if p.kind == frames.PUBACK] == [7]
    (ack,) = acks(transport)
    assert (ack.set_version, list(ack.entitlement_ids)) == (3, ["e-1", "e-0"])
    report = await worker.set_report()
    assert (report["watched"], report["booted"], len(report["latencies_ms"])) == (1, 1, 1)
    assert report["missed_vins"] == [] and report["early_sets"] == 0


async def test_only_the_first_set_after_the_boot_is_timed(worker: Worker) -> None:
    cs = worker.cars[0]
    await worker.watch(SERVICE, [cs.car.vin])
    conn, _ = attach(worker, cs)
    cs.boot_at = 1.0
    worker.on_downlink(conn, _set(cs.car.vin, 1, ("e-1", SERVICE)), now=1.2)
    worker.on_downlink(conn, _set(cs.car.vin, 2, ("e-1", SERVICE)), now=5.0)
    assert cs.set_ms == pytest.approx(200.0)
    assert worker.counters[SETS] == 1


async def test_a_set_with_the_service_before_the_watched_boot_counts_as_early(worker: Worker) -> None:
    cs = worker.cars[0]
    await worker.watch(SERVICE, [cs.car.vin])
    conn, transport = attach(worker, cs)
    worker.on_downlink(conn, _set(cs.car.vin, 1, ("e-1", SERVICE)), now=1.0)  # no boot yet (R13)
    assert (worker.early_sets, cs.set_ms, worker.counters[SETS]) == (1, -1.0, 0)
    assert len(acks(transport)) == 1  # acked all the same, as a car does


async def test_a_set_during_the_grants_before_watching_counts_as_early(worker: Worker) -> None:
    cs = worker.cars[0]
    conn, _ = attach(worker, cs)
    worker.on_downlink(conn, _set(cs.car.vin, 1, ("e-1", SERVICE)), now=1.0)
    await worker.watch(SERVICE, [cs.car.vin])
    assert (await worker.set_report())["early_sets"] == 1


async def test_a_set_without_the_service_is_acked_but_leaves_the_car_missed(worker: Worker) -> None:
    cs = worker.cars[0]
    await worker.watch(SERVICE, [cs.car.vin])
    conn, transport = attach(worker, cs)
    cs.boot_at = 1.0
    worker.on_downlink(conn, _set(cs.car.vin, 1, ("e-9", "car-finder")), now=1.1)
    assert len(acks(transport)) == 1
    report = await worker.set_report()
    assert report["latencies_ms"] == [] and report["missed_vins"] == [cs.car.vin]


async def test_cars_not_granted_are_not_watched(worker: Worker) -> None:
    granted, other = worker.cars
    await worker.watch(SERVICE, [granted.car.vin])
    report = await worker.set_report()
    assert report["watched"] == 1
    assert other.car.vin not in report["missed_vins"]


async def test_a_downlink_that_is_not_protobuf_is_counted(worker: Worker) -> None:
    cs = worker.cars[0]
    conn, transport = attach(worker, cs)
    worker.on_downlink(conn, b"\xff\xff\xff", now=1.0)
    assert worker.bad_downlinks == 1
    assert transport.written == b""


def _set(vin: str, version: int, *items: tuple[str, str]) -> bytes:
    return frames.parse_publish(frames.FrameReader().feed(set_frame(vin, version, *items))[0])[2]
