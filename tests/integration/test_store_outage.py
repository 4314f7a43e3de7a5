"""The database unreachable for 10 s while cars publish and a backend grants: nothing
acknowledged is lost, /readyz says not ready meanwhile, and the gateway recovers by itself.

On PostgreSQL the gateway's `store_url` points at an in-process TCP proxy (tests/tcp_proxy.py)
that is cut (every connection aborted, new ones refused) and healed. SQLite has no link to cut;
its equivalent is another connection holding each database file's write lock (`BEGIN
EXCLUSIVE`) for the same time: every write then fails with "database is locked" after the busy
timeout, which the store and ledger raise as StoreError / LedgerError, the same errors (and
the same code paths: pipeline retry, gRPC UNAVAILABLE, readiness) as a PostgreSQL outage.
Making the files unwritable would not do: the gateway holds them open already, and root ignores
the mode. Reads of committed data keep working on SQLite meanwhile (WAL readers do not wait for
a writer), which is right: they are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from support import eventually, free_port, gateway_channel, gateway_config
from tcp_proxy import TcpProxy
from test_walking_skeleton import get_vehicle, take
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import (
    common_pb2,
    entitlements_pb2,
    entitlements_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway

pytestmark = pytest.mark.integration

OUTAGE_S = 10.0  # the issue: "PostgreSQL unreachable for 10 s during grants and ingest"
VINS = ["WP0ZZZ99ZJS500001", "WP0ZZZ99ZJS500002", "WP0ZZZ99ZJS500003"]
OWNER = "owner@example.com"
LOCKS = (common_pb2.LOCK_STATE_LOCKED, common_pb2.LOCK_STATE_UNLOCKED)
PACE_S = 0.05  # between one car's messages, and between grants: a steady trickle, not a flood


class Fault(Protocol):
    async def cut(self) -> None: ...

    async def heal(self) -> None: ...


class PostgresCut:
    """The gateway reaches PostgreSQL through a proxy that the test cuts and heals."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        host = query.pop("host", "") or parts.hostname or "127.0.0.1"  # a Unix socket dir or a host
        self.proxy = TcpProxy(host, parts.port or 5432)
        self._parts = parts._replace(query=urlencode(query))

    async def start(self) -> str:
        """Start the proxy; the store_url that reaches the database through it."""
        port = await self.proxy.start()
        user = self._parts.username or ""
        password = f":{self._parts.password}" if self._parts.password else ""
        return urlunsplit(self._parts._replace(netloc=f"{user}{password}@127.0.0.1:{port}"))

    async def cut(self) -> None:
        await self.proxy.cut()

    async def heal(self) -> None:
        await self.proxy.heal()


class SqliteLock:
    """Another connection holds the write lock of both database files (see the module doc)."""

    def __init__(self, data_dir: Path) -> None:
        self._files = [data_dir / "gateway.db", data_dir / "entitlements.db"]
        self._held: list[sqlite3.Connection] = []

    def _lock(self) -> list[sqlite3.Connection]:
        held = []
        for path in self._files:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("BEGIN EXCLUSIVE")  # waits for a commit of the gateway's in flight
            held.append(db)
        return held

    async def cut(self) -> None:
        self._held = await asyncio.to_thread(self._lock)

    async def heal(self) -> None:
        held, self._held = self._held, []
        for db in held:
            db.execute("ROLLBACK")
            db.close()


@dataclass
class Traffic:
    """What the cars and the backend did, and what /readyz said, by phase."""

    phase: str = "before"
    grants: list[tuple[str, str, grpc.StatusCode]] = field(default_factory=list)  # order, phase, code
    readiness: list[tuple[str, int, dict[str, object]]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def booked_now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


async def grant_loop(stub: entitlements_pb2_grpc.EntitlementServiceStub, traffic: Traffic) -> None:
    n = 0
    while not traffic.stop.is_set():
        n += 1
        order = f"order-{n}"
        phase = traffic.phase
        request = entitlements_pb2.GrantRequest(
            order_id=order, vin=VINS[n % len(VINS)], product_id="remote-services",
            kind=entitlements_pb2.ENTITLEMENT_KIND_SERVICE, purchaser=OWNER,
            purchaser_role=entitlements_pb2.PURCHASER_ROLE_OWNER, booked_at=booked_now(),
        )
        try:
            await stub.Grant(request, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        traffic.grants.append((order, phase, code))
        await asyncio.sleep(PACE_S)  # paces the backend; proves nothing


async def car_loop(car: TestVehicle, traffic: Traffic) -> None:
    i = 0
    while not traffic.stop.is_set():
        await car.state(lock=LOCKS[i % 2])  # QoS 1: the broker acks it whatever the gateway does
        i += 1
        await asyncio.sleep(PACE_S)  # paces the car; proves nothing


async def readiness_loop(port: int, traffic: Traffic) -> None:
    async with aiohttp.ClientSession() as http:
        while not traffic.stop.is_set():
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                traffic.readiness.append((traffic.phase, resp.status, await resp.json()))
            await asyncio.sleep(0.05)  # paces the poll


async def http_status(port: int, path: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status


async def metric(gw: Gateway, name: str, labels: dict[str, str]) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def outage(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Fault]]:
    """A gateway on the test's database kind (conftest `backend`) and the fault to cut it off."""
    fault: PostgresCut | SqliteLock
    url = ""
    if store_url:
        fault = PostgresCut(store_url)
        url = await fault.start()
    else:
        fault = SqliteLock(tmp_path / "data")
    gw = Gateway(gateway_config(tmp_path, free_port(), store_url=url))
    await gw.start()
    try:
        yield gw, fault
    finally:
        await fault.heal()
        await gw.stop()
        if isinstance(fault, PostgresCut):
            await fault.proxy.close()


async def test_database_outage_loses_nothing_acknowledged_and_the_gateway_recovers_by_itself(
    outage: tuple[Gateway, Fault],
) -> None:
    gw, fault = outage
    cars = [TestVehicle(vin, gw.config.mqtt_port, bearer=common_pb2.BEARER_EMBEDDED_SIM) for vin in VINS]
    traffic = Traffic()
    async with gateway_channel(gw) as channel:
        entitlements = entitlements_pb2_grpc.EntitlementServiceStub(channel)
        vehicles = vehicles_pb2_grpc.VehicleServiceStub(channel)
        for car in cars:
            await car.connect()
            await entitlements.SetVehicleOwner(
                entitlements_pb2.SetVehicleOwnerRequest(vin=car.vin, owner=OWNER)
            )
        for vin in VINS:
            await eventually(partial(get_vehicle, vehicles, vin), lambda v: v is not None)
        pipeline = next(t for t in asyncio.all_tasks() if t.get_name() == "gateway.pipeline")
        loops = [
            asyncio.create_task(grant_loop(entitlements, traffic)),
            asyncio.create_task(readiness_loop(gw.http_port, traffic)),
            *(asyncio.create_task(car_loop(car, traffic)) for car in cars),
        ]
        try:
            await eventually(lambda: asyncio.sleep(0, traffic.grants), lambda g: len(g) >= 3)

            traffic.phase = "cut"
            await fault.cut()
            cut_at = time.monotonic()
            await eventually(
                lambda: asyncio.sleep(0, traffic.readiness),
                lambda r: any(p == "cut" and status == 503 for p, status, _ in r),
            )
            assert await http_status(gw.http_port, "/healthz") == 200  # alive: not to be restarted
            # The outage itself lasts OUTAGE_S; the loops keep publishing and granting meanwhile.
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
            traffic.phase = "healed"
            await fault.heal()

            await eventually(
                lambda: asyncio.sleep(0, traffic.readiness),
                lambda r: any(p == "healed" and status == 200 for p, status, _ in r),
                timeout=30,
            )
            await eventually(
                lambda: asyncio.sleep(0, traffic.grants),
                lambda g: any(p == "healed" and code is grpc.StatusCode.OK for _, p, code in g),
                timeout=30,
            )
        finally:
            traffic.stop.set()
            for task in loops:
                with contextlib.suppress(Exception):
                    await task
        assert not pipeline.done(), "the pipeline task ended: the gateway would have exited"

        # Grants: OK and in the ledger (read back from the database), or UNAVAILABLE.
        codes = {code for _, _, code in traffic.grants}
        assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
        assert any(p == "cut" and code is grpc.StatusCode.UNAVAILABLE for _, p, code in traffic.grants)
        stored: set[str] = set()
        for vin in VINS:
            listed = await entitlements.ListEntitlements(
                entitlements_pb2.ListEntitlementsRequest(vin=vin, include_ended=True)
            )
            stored.update(e.order_id for e in listed.entitlements)
        granted = {order for order, _, code in traffic.grants if code is grpc.StatusCode.OK}
        assert granted <= stored, sorted(granted - stored)

        # Readiness: not ready during the cut, for the store, and ready again after.
        during = [(status, body) for p, status, body in traffic.readiness if p == "cut"]
        assert any(status == 503 and body.get("reason") == "store unavailable" for status, body in during)
        assert traffic.readiness[-1][1] == 200

        # Every QoS 1 message of every car was processed exactly once, in order: the event log
        # holds one state_changed per message, the last one the car's last sequence (a repeat
        # of an earlier message would come before it).
        for car in cars:
            stream = vehicles.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=car.vin))
            events = await asyncio.wait_for(take(stream, car.sequence), 60)  # online + the changes
            stream.cancel()
            kinds = [e.WhichOneof("kind") for e in events]
            assert kinds == ["online"] + ["state_changed"] * (car.sequence - 1)
            assert [e.vehicle.last_sequence for e in events] == list(range(1, car.sequence + 1))
        # The cut hit the ingest, not only the grants: batches waited for the database. A batch
        # fails at its first step that writes: the ledger's (a state change the entitlement
        # engine acts on) or the vehicle store's; which one comes first depends on timing.
        retried = [await metric(gw, "gateway_store_commit_retries_total", {"step": step})
                   for step in ("entitlements", "store")]
        assert sum(retried) > 0, retried
    for car in cars:
        await car.close()


async def test_reads_that_need_postgresql_answer_unavailable_while_it_is_cut_and_work_after(
    pg_url: str, tmp_path: Path
) -> None:
    fault = PostgresCut(pg_url)
    gw = Gateway(gateway_config(tmp_path, free_port(), store_url=await fault.start()))
    await gw.start()
    try:
        async with gateway_channel(gw) as channel:
            entitlements = entitlements_pb2_grpc.EntitlementServiceStub(channel)
            vehicles = vehicles_pb2_grpc.VehicleServiceStub(channel)

            async def list_entitlements() -> object:
                request = entitlements_pb2.ListEntitlementsRequest(vin=VINS[0], include_ended=True)
                return await entitlements.ListEntitlements(request)

            async def watch_events() -> object:
                stream = vehicles.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VINS[0]))
                return await stream.read()  # the replay's first read goes to the event log

            await fault.cut()
            for call in (list_entitlements, watch_events):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call()
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, call.__name__
                assert "unavailable" in (caught.value.details() or "")
                assert "postgresql://" not in (caught.value.details() or "")  # no URL to the caller
            await fault.heal()
            await list_entitlements()  # the pool connects again by itself
    finally:
        await gw.stop()
        await fault.proxy.close()
