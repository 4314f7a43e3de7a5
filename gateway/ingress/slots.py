"""Ingest slots: how several gateways share one broker's MQTT sessions without losing a message.

The design (README "Several gateways on one broker"):

* Every gateway subscribes through one MQTT 5 shared subscription (`$share/<group>/...`,
  `mqtt_shared_group`): the broker hands each message to one member of the group.
* The members are *slots*: the client ids `<mqtt_client_id>-1 .. -N` (N = `mqtt_slots`), each
  a persistent session at the broker (clean start off, session expiry 7 days). While no gateway
  is connected as a slot, the broker keeps queueing that slot's share of the messages
  (Mosquitto 2.0 goes on assigning shared messages to an offline persistent member: checked
  against the real broker in tests/integration/test_ingest_slots.py). So nothing is lost only if
  some live gateway connects as every slot that has a session.
* Each gateway holds *leases* on slots in PostgreSQL (table `ingest_slots`, store_url) and
  connects one MQTT session per slot it holds. Leases last `lease_s` (`mqtt_slot_lease_s`) and
  are renewed every `lease_s / 3`. A gateway that dies stops renewing; once its leases expired,
  a live gateway claims each of them within one renewal period and connects as that slot,
  draining what the broker queued for it.
* A gateway that cannot renew (the database is unreachable) gives its slots up by its own
  clock before the database lets anyone else take them: the local deadline is half a renewal
  period before the earliest moment the lease can expire. So two gateways never hold one client
  id at once (they would take the session from each other on every reconnect).
* Fair share: the gateways heartbeat in `ingest_members`; each holds about N / live members
  (rounded up), claiming free slots when below it (orphaned ones, which have a queue, first)
  and handing slots back (clean disconnect, then release) when above it. A gateway beyond N
  waits as a standby, claiming a slot when one frees up.

Without store_url (one gateway on SQLite), or with the managed broker (a broker of this one
gateway: nothing to share), there are no slots and no leases: `mqtt_client_id` as before.

This module is the lease logic alone: a LeaseTable (PostgreSQL in
gateway/store/slot_leases_postgres.py) and an injected clock (deadlines are differences of
`clock.now()`: a monotonic clock in production, a ManualClock in the unit tests).
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.clock import Clock
from gateway.config import Config

__all__ = [
    "LeaseTable",
    "MonotonicClock",
    "Round",
    "SlotKeeper",
    "holder_name",
    "slot_names",
    "uses_slots",
]


def uses_slots(config: Config) -> bool:
    """Slots and leases: several gateways may share the broker (an external one) and the
    database (PostgreSQL). Otherwise one gateway with `mqtt_client_id`, as before."""
    return bool(config.store_url) and not config.broker_is_managed


def slot_names(prefix: str, count: int) -> list[str]:
    """The client ids of the slots: `<prefix>-1 .. <prefix>-<count>`."""
    return [f"{prefix}-{i}" for i in range(1, count + 1)]


def holder_name() -> str:
    """This process's name in the lease table: host and pid for the operator, and a random part
    so a restarted process with a reused pid is a new holder."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class MonotonicClock:
    """Seconds that never jump (NTP steps would move a wall-clock deadline)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class LeaseTable(Protocol):
    """The shared record of who holds which slot. Expiry is judged by the table's own time
    (PostgreSQL's now()), never by a gateway's clock: gateways' clocks may disagree."""

    async def join(self, holder: str, slots: Sequence[str], lease_s: float) -> None:
        """Make sure the slots exist; announce `holder` as a live member."""
        ...

    async def heartbeat(self, holder: str, lease_s: float) -> int:
        """Extend `holder`'s membership; the number of live members, `holder` included."""
        ...

    async def renew(self, holder: str, slots: Sequence[str], lease_s: float) -> set[str]:
        """Extend the leases `holder` still holds (not expired) among `slots`; those renewed."""
        ...

    async def claim(self, holder: str, slots: Sequence[str], count: int, lease_s: float) -> list[str]:
        """Take up to `count` of `slots` whose lease expired (orphaned ones first); those taken."""
        ...

    async def release(self, holder: str, slots: Sequence[str]) -> None:
        """End `holder`'s leases on `slots` at once (another may claim them now)."""
        ...

    async def leave(self, holder: str) -> None:
        """`holder` is no member any more."""
        ...


@dataclass(frozen=True, slots=True)
class Round:
    """What one renewal round changed."""

    claimed: tuple[str, ...] = ()  # now ours: connect as them
    lost: tuple[str, ...] = ()  # the table refused the renewal: disconnect at once
    surplus: tuple[str, ...] = ()  # ours beyond the fair share: disconnect, then release()


class SlotKeeper:
    """One gateway's leases: renews, claims, hands back, and says when a slot must be dropped
    because its lease could not be renewed in time. No I/O of its own but the LeaseTable."""

    def __init__(
        self, table: LeaseTable, *, holder: str, slots: Sequence[str], lease_s: float, clock: Clock
    ) -> None:
        if not slots:
            raise ValueError("no slots")
        self.table = table
        self.holder = holder
        self.slots = list(slots)
        self.lease_s = lease_s
        self.period_s = lease_s / 3
        # Drop a slot this long after the renewal that was sent last succeeded: half a period
        # before the table can expire it (the table counts from when it ran the renewal, which
        # is after we sent it), with every round bounded to half a period.
        self.hold_s = lease_s - self.period_s / 2
        self._clock = clock
        self._deadlines: dict[str, float] = {}  # slot -> local drop time

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._deadlines)

    async def join(self) -> None:
        await self.table.join(self.holder, self.slots, self.lease_s)

    async def tick(self) -> Round:
        """One renewal round: membership, renewal of what we hold, then claims up to the fair
        share or the surplus beyond it. Raises what the table raises (nothing is changed then:
        the deadlines of what we hold run on)."""
        sent = self._clock.now()  # before the calls: a deadline never outlives the table's lease
        live = await self.table.heartbeat(self.holder, self.lease_s)
        held = sorted(self._deadlines)
        renewed = await self.table.renew(self.holder, held, self.lease_s) if held else set()
        lost = tuple(s for s in held if s not in renewed)
        for slot in lost:
            del self._deadlines[slot]
        for slot in renewed:
            if slot in self._deadlines:  # dropped meanwhile by overdue(): stays dropped
                self._deadlines[slot] = sent + self.hold_s
        share = math.ceil(len(self.slots) / max(live, 1))
        claimed: list[str] = []
        if len(self._deadlines) < share:
            claimed = await self.table.claim(
                self.holder, self.slots, share - len(self._deadlines), self.lease_s
            )
            for slot in claimed:
                self._deadlines[slot] = sent + self.hold_s
        surplus = tuple(sorted(self._deadlines, key=self._order)[share:])
        return Round(claimed=tuple(claimed), lost=lost, surplus=surplus)

    def overdue(self) -> list[str]:
        """The slots whose lease could not be renewed in time: no longer ours (the caller
        disconnects them at once, before the table lets another gateway take them)."""
        now = self._clock.now()
        due = [slot for slot, deadline in self._deadlines.items() if deadline <= now]
        for slot in due:
            del self._deadlines[slot]
        return sorted(due, key=self._order)

    def seconds_to_deadline(self) -> float | None:
        """Until the first drop time of what we hold; None when we hold nothing."""
        if not self._deadlines:
            return None
        return max(0.0, min(self._deadlines.values()) - self._clock.now())

    async def release(self, slots: Sequence[str]) -> None:
        """Hand slots back (after their sessions were disconnected): no longer ours at once;
        the table frees them for another gateway (an error leaves them to expire)."""
        for slot in slots:
            self._deadlines.pop(slot, None)
        if slots:
            await self.table.release(self.holder, list(slots))

    async def leave(self) -> None:
        """Shutting down: release everything and stop being a member."""
        held = sorted(self._deadlines)
        self._deadlines.clear()
        if held:
            await self.table.release(self.holder, held)
        await self.table.leave(self.holder)

    def _order(self, slot: str) -> int:
        return self.slots.index(slot)
