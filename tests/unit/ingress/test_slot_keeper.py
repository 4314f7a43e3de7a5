"""The lease logic of ingest slots (gateway/ingress/slots.py) on a ManualClock, with an in-memory
lease table that judges expiry by the same clock (as PostgreSQL judges it by its own now())."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from gateway.clock import ManualClock
from gateway.config import Config
from gateway.ingress.slots import LeaseTable, SlotKeeper, slot_names, uses_slots

SLOTS = slot_names("gw", 2)
LEASE = 15.0


@dataclass
class MemoryLeaseTable:
    """The LeaseTable contract in memory; `down` makes every call fail like an unreachable database."""

    clock: ManualClock
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # slot -> (holder, expires)
    members: dict[str, float] = field(default_factory=dict)
    down: bool = False

    def _up(self) -> None:
        if self.down:
            raise OSError("database unreachable")

    async def join(self, holder: str, slots: Sequence[str], lease_s: float) -> None:
        self._up()
        for slot in slots:
            self.leases.setdefault(slot, ("", float("-inf")))
        await self.heartbeat(holder, lease_s)

    async def heartbeat(self, holder: str, lease_s: float) -> int:
        self._up()
        now = self.clock.now()
        self.members[holder] = now + lease_s
        return sum(1 for expires in self.members.values() if expires > now)

    async def renew(self, holder: str, slots: Sequence[str], lease_s: float) -> set[str]:
        self._up()
        now = self.clock.now()
        renewed = set()
        for slot in slots:
            who, expires = self.leases[slot]
            if who == holder and expires > now:
                self.leases[slot] = (holder, now + lease_s)
                renewed.add(slot)
        return renewed

    async def claim(self, holder: str, slots: Sequence[str], count: int, lease_s: float) -> list[str]:
        self._up()
        now = self.clock.now()
        # Orphans (held before) first, as the PostgreSQL table does.
        free = [s for s in slots if self.leases[s][1] <= now]
        free.sort(key=lambda s: (not self.leases[s][0], s))
        taken = free[:count]
        for slot in taken:
            self.leases[slot] = (holder, now + lease_s)
        return taken

    async def release(self, holder: str, slots: Sequence[str]) -> None:
        self._up()
        for slot in slots:
            if self.leases[slot][0] == holder:
                self.leases[slot] = (holder, float("-inf"))

    async def leave(self, holder: str) -> None:
        self._up()
        self.members.pop(holder, None)

    def holders(self) -> dict[str, str]:
        now = self.clock.now()
        return {slot: who for slot, (who, expires) in self.leases.items() if expires > now}


def keeper(table: LeaseTable, clock: ManualClock, holder: str, slots: Sequence[str] = SLOTS) -> SlotKeeper:
    return SlotKeeper(table, holder=holder, slots=slots, lease_s=LEASE, clock=clock)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def table(clock: ManualClock) -> MemoryLeaseTable:
    return MemoryLeaseTable(clock)


async def test_a_lone_gateway_claims_every_slot(clock: ManualClock, table: MemoryLeaseTable) -> None:
    a = keeper(table, clock, "a")
    await a.join()
    result = await a.tick()
    assert sorted(result.claimed) == SLOTS and a.held == set(SLOTS)


async def test_a_second_gateway_gets_a_slot_handed_back_by_the_first(
    clock: ManualClock, table: MemoryLeaseTable
) -> None:
    a, b = keeper(table, clock, "a"), keeper(table, clock, "b")
    await a.join()
    await a.tick()
    await b.join()
    assert (await b.tick()).claimed == ()  # nothing free yet
    result = await a.tick()  # a sees two members: its share is one
    assert result.surplus == ("gw-2",)
    await a.release(result.surplus)
    assert (await b.tick()).claimed == ("gw-2",)
    assert table.holders() == {"gw-1": "a", "gw-2": "b"}
    assert (await a.tick()).surplus == () and (await b.tick()).surplus == ()


async def test_a_dead_gateways_slot_is_claimed_within_one_period_after_its_lease_expired(
    clock: ManualClock, table: MemoryLeaseTable
) -> None:
    a, b = keeper(table, clock, "a"), keeper(table, clock, "b")
    await a.join()
    await b.join()
    await a.tick()
    await b.tick()
    assert table.holders() == {"gw-1": "a", "gw-2": "b"}
    # a dies: no more rounds. b goes on renewing every period.
    waited = 0.0
    while "gw-1" not in b.held:
        clock.advance(b.period_s)
        waited += b.period_s
        await b.tick()
    assert LEASE <= waited <= LEASE + b.period_s
    assert table.holders() == {"gw-1": "b", "gw-2": "b"}


async def test_a_live_lease_is_never_claimed_by_another(clock: ManualClock, table: MemoryLeaseTable) -> None:
    a, b = keeper(table, clock, "a", ["gw-1"]), keeper(table, clock, "b", ["gw-1"])
    await a.join()
    await b.join()
    await a.tick()
    for _ in range(10):
        clock.advance(a.period_s)
        await a.tick()
        assert (await b.tick()).claimed == ()
    assert a.held == {"gw-1"} and b.held == set()


async def test_a_gateway_that_cannot_renew_drops_its_slot_before_the_lease_can_expire(
    clock: ManualClock, table: MemoryLeaseTable
) -> None:
    a = keeper(table, clock, "a", ["gw-1"])
    await a.join()
    await a.tick()
    renewed_at = clock.now()
    table.down = True
    dropped_at = None
    while dropped_at is None:
        clock.advance(0.1)
        with pytest.raises(OSError):
            await a.tick()
        if a.overdue() == ["gw-1"]:
            dropped_at = clock.now()
    # Dropped after missing one renewal, and before the table would let another claim it.
    assert renewed_at + 2 * a.period_s < dropped_at < renewed_at + LEASE
    assert a.held == set()
    assert table.holders() == {"gw-1": "a"}  # still a's in the table: nobody else holds it now


async def test_a_failed_round_changes_nothing_and_the_next_one_renews(
    clock: ManualClock, table: MemoryLeaseTable
) -> None:
    a = keeper(table, clock, "a", ["gw-1"])
    await a.join()
    await a.tick()
    clock.advance(a.period_s)
    table.down = True
    with pytest.raises(OSError):
        await a.tick()
    table.down = False
    clock.advance(a.period_s)
    await a.tick()
    clock.advance(a.period_s)  # past the drop time the first renewal set
    assert a.overdue() == [] and a.held == {"gw-1"}


async def test_a_renewal_refused_by_the_table_loses_the_slot(
    clock: ManualClock, table: MemoryLeaseTable
) -> None:
    a = keeper(table, clock, "a", ["gw-1"])
    await a.join()
    await a.tick()
    table.leases["gw-1"] = ("someone", clock.now() + LEASE)  # e.g. a's clock ran slow
    assert (await a.tick()).lost == ("gw-1",) and a.held == set()


async def test_the_time_to_the_next_drop_is_what_the_lease_loop_waits_at_most(
    clock: ManualClock, table: MemoryLeaseTable
) -> None:
    a = keeper(table, clock, "a", ["gw-1"])
    assert a.seconds_to_deadline() is None
    await a.join()
    await a.tick()
    assert a.seconds_to_deadline() == pytest.approx(a.hold_s)
    clock.advance(a.hold_s + 1)
    assert a.seconds_to_deadline() == 0.0


async def test_leaving_releases_every_slot_for_the_others_at_once(
    clock: ManualClock, table: MemoryLeaseTable
) -> None:
    a, b = keeper(table, clock, "a"), keeper(table, clock, "b")
    await a.join()
    await a.tick()
    await b.join()
    await a.leave()
    assert sorted((await b.tick()).claimed) == SLOTS


async def test_gateways_beyond_the_slot_count_stand_by(clock: ManualClock, table: MemoryLeaseTable) -> None:
    keepers = [keeper(table, clock, name) for name in "abc"]
    for k in keepers:
        await k.join()
    for _ in range(3):
        for k in keepers:
            await k.release((await k.tick()).surplus)
    assert sorted(len(k.held) for k in keepers) == [0, 1, 1]


def test_slots_only_with_postgresql_and_an_external_broker() -> None:
    url = "postgresql://gw@db:5432/gw"
    assert not uses_slots(Config())
    assert not uses_slots(Config(store_url=url))  # the managed broker is this gateway's own
    assert not uses_slots(Config(mqtt_url="mqtt://b:1883"))  # SQLite: one gateway
    assert uses_slots(Config(store_url=url, mqtt_url="mqtt://b:1883"))
    assert slot_names("telematics-gateway", 3) == [
        "telematics-gateway-1", "telematics-gateway-2", "telematics-gateway-3"
    ]
