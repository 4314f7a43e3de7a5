"""Which cars' time-driven entitlement work (term ends, FoD windows, sets to send, unsent
commands) this gateway does, when several share one PostgreSQL database.

Each car is one live gateway's: the member with the highest hash of (member, VIN), rendezvous
hashing over the live gateways of `ingest_members` (the ingest slots' heartbeats). Every gateway
computes the same owner from the same member list, with no coordination; when a member's
heartbeat expires, only its cars move (each to the survivor ranking next for it), and a new
member takes about 1/N of the cars from each. The work of a car that a car's own message
triggers stays where the message arrived (`EntitlementEngine.on_vehicle_batch`).

Two gateways whose member lists differ for a moment (a heartbeat just expired, one read it
first) may both work on a car for a tick: the ledger's version check lets only one write win,
as before this partition existed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from gateway.clock import Clock

log = logging.getLogger("gateway.entitlements.engine")

MEMBERS_REFRESH_S = 5.0

ReadMembers = Callable[[], Awaitable[list[str]]]


def _score(member: str, vin: str) -> bytes:
    return hashlib.blake2b(f"{member}\x00{vin}".encode(), digest_size=8).digest()


def owner_of(vin: str, members: Sequence[str]) -> str:
    """The member responsible for `vin`: the highest hash of (member, vin). `members` non-empty."""
    return max(members, key=lambda m: (_score(m, vin), m))


class CarShares:
    """This gateway's cars by `owner_of` over the live members, read again every `refresh_s`."""

    def __init__(
        self, *, me: str, read_members: ReadMembers, clock: Clock, refresh_s: float = MEMBERS_REFRESH_S
    ) -> None:
        """me: this gateway's member name (its ingest-slot holder). read_members: the live members
        now (PostgresMembers.live). clock: when to read again."""
        self.me = me
        self._read = read_members
        self._clock = clock
        self._refresh_s = refresh_s
        self._read_at: float | None = None
        self.members: tuple[str, ...] = ()

    async def refresh(self) -> None:
        """Read the live members when the last read is `refresh_s` old. A failed read keeps the
        last list (the database is down: no work commits anyway)."""
        now = self._clock.now()
        if self._read_at is not None and now - self._read_at < self._refresh_s:
            return
        self._read_at = now
        try:
            self.members = tuple(sorted(set(await self._read())))
        except Exception as exc:
            log.warning("reading the live gateways failed, keeping %d: %s", len(self.members), exc)

    def mine(self, vin: str) -> bool:
        """No live member known (not joined yet, or alone): every car is this gateway's. Else only
        the cars `owner_of` gives it: a gateway whose own membership expired does none, as the
        others, which no longer count it, do all of them."""
        return not self.members or owner_of(vin, self.members) == self.me
