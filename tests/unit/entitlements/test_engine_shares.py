"""Each car's time-driven entitlement work is one live gateway's: rendezvous hashing over the live
members (engine/_shares.py), the members read from PostgreSQL (store/fleet_members_postgres.py),
and two engines on one database of which exactly one ends a car's term."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from engine_harness import OWNER, VIN, at, order

from gateway.clock import ManualClock
from gateway.config import Config
from gateway.entitlements import EntitlementKind
from gateway.entitlements.engine import EntitlementEngine
from gateway.entitlements.engine._shares import CarShares, owner_of
from gateway.entitlements.ledger.postgres import PostgresLedger
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.session.hub import EventHub
from gateway.store.backends import build_backends
from gateway.store.fleet_members_postgres import PostgresMembers
from gateway.store.slot_leases_postgres import PostgresLeaseTable

VINS = [f"WP0ZZZ99ZTS{n:06d}" for n in range(3000)]
MEMBERS = ["gw-a", "gw-b", "gw-c"]


def test_each_car_has_the_same_owner_whatever_the_order_of_the_members() -> None:
    for vin in VINS[:200]:
        assert owner_of(vin, MEMBERS) == owner_of(vin, list(reversed(MEMBERS)))


def test_the_cars_are_shared_about_evenly() -> None:
    counts = Counter(owner_of(vin, MEMBERS) for vin in VINS)
    assert set(counts) == set(MEMBERS)
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_only_the_dead_members_cars_move() -> None:
    survivors = ["gw-a", "gw-c"]
    for vin in VINS:
        before = owner_of(vin, MEMBERS)
        after = owner_of(vin, survivors)
        assert after == before if before != "gw-b" else after in survivors


async def test_without_known_members_every_car_is_this_gateways() -> None:
    async def none() -> list[str]:
        return []

    shares = CarShares(me="gw-a", read_members=none, clock=ManualClock(start=0.0))
    await shares.refresh()
    assert all(shares.mine(vin) for vin in VINS[:50])


async def test_the_member_list_is_read_again_only_after_the_refresh_interval() -> None:
    clock = ManualClock(start=0.0)
    members = ["gw-a", "gw-b"]
    reads = 0

    async def read() -> list[str]:
        nonlocal reads
        reads += 1
        return list(members)

    shares = CarShares(me="gw-a", read_members=read, clock=clock, refresh_s=5.0)
    await shares.refresh()
    members.remove("gw-b")
    clock.advance(4.0)
    await shares.refresh()
    assert (reads, shares.members) == (1, ("gw-a", "gw-b"))
    clock.advance(1.0)
    await shares.refresh()
    assert (reads, shares.members) == (2, ("gw-a",))
    assert all(shares.mine(vin) for vin in VINS[:50])  # the dead member's cars came here


@pytest.fixture
async def ledgers(pg_url: str, tmp_path: Path) -> AsyncIterator[list[PostgresLedger]]:
    out: list[PostgresLedger] = []
    for _ in range(2):
        ledger = build_backends(Config(data_dir=str(tmp_path), store_url=pg_url)).ledger
        assert isinstance(ledger, PostgresLedger)
        await ledger.open()
        out.append(ledger)
    yield out
    for ledger in out:
        await ledger.close()


@pytest.fixture
async def table(pg_url: str) -> AsyncIterator[PostgresLeaseTable]:
    t = PostgresLeaseTable(url=pg_url)
    await t.open()
    yield t
    await t.close()


async def test_the_live_members_are_those_whose_heartbeat_has_not_expired(
    ledgers: list[PostgresLedger], table: PostgresLeaseTable
) -> None:
    await table.join("gw-a", ["slot-1"], 30.0)
    await table.join("gw-b", ["slot-1"], 30.0)
    await table.heartbeat("gw-dead", -1.0)  # expired a second ago
    assert await PostgresMembers(ledgers[0].database).live() == ["gw-a", "gw-b"]


async def _publish(topic: str, payload: bytes) -> None:
    return None


def _no_session(vin: str) -> VehicleSession | None:
    return None


async def test_a_term_that_ends_is_ended_by_exactly_one_gateway(
    ledgers: list[PostgresLedger], table: PostgresLeaseTable
) -> None:
    clock = ManualClock(start=at(2026, 3, 2))
    for member in ("gw-a", "gw-b"):
        await table.join(member, ["slot-1"], 3600.0)
    engines: dict[str, EntitlementEngine] = {}
    metrics: dict[str, Metrics] = {}
    for member, ledger in zip(("gw-a", "gw-b"), ledgers, strict=True):
        metrics[member] = Metrics()
        engine = EntitlementEngine(ledger=ledger, clock=clock, metrics=metrics[member], publish=_publish,
                                   session_of=_no_session, hub=EventHub(), peers=ledger)
        engine.shares = CarShares(me=member, read_members=PostgresMembers(ledger.database).live, clock=clock)
        await engine.start()
        engines[member] = engine
    a = engines["gw-a"]
    await a.set_owner(VIN, OWNER)
    e = await a.grant(order(EntitlementKind.FIXED_TERM, term_months=1, auto_renew=False))
    for engine in engines.values():
        await engine.tick()  # both know it now (b by following a's grant)
    after_grant = (await ledgers[0].read_events(0, 100))[-1].cursor
    clock.set(at(2026, 5, 1))  # the term is over
    for engine in engines.values():
        await engine.tick()
    for engine in engines.values():
        await engine.tick()  # the other one follows, and does not end it again
    events = await ledgers[0].read_events(after_grant, 100)
    ended = [ev for ev in events if ev.entitlement_id == e.entitlement_id]
    assert ended, "the term was not ended"
    assert len({ev.kind for ev in ended}) == len(ended)  # each event once
    owner = owner_of(VIN, ["gw-a", "gw-b"])
    other = "gw-b" if owner == "gw-a" else "gw-a"
    assert metrics[owner].registry.get_sample_value("gateway_entitlement_events_total",
                                                    {"kind": ended[0].kind}) == 1
    assert metrics[other].registry.get_sample_value("gateway_entitlement_events_total",
                                                    {"kind": ended[0].kind}) == 0  # exists from the start
    for m in metrics.values():
        assert m.registry.get_sample_value("gateway_entitlement_conflicts_total") == 0
