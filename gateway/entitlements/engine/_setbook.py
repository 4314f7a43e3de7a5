"""The engine's memory of each VIN's entitlement sets (R13): the versions recorded, published and
acked, which VINs may need a new set, and which sets the car left unacked for too long.

The ledger is the truth (`Ledger.load_sets` rebuilds this at start); this only mirrors what was
committed, so it is updated after each ledger transaction, never before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from gateway.entitlements.ledger.base import SetMark, SetRecord, VehicleSets


class SetBook:
    def __init__(self) -> None:
        self._sets: dict[str, VehicleSets] = {}
        self._recorded: dict[str, SetRecord] = {}  # latest recorded set per VIN, maybe unpublished
        self._work: set[str] = set()  # VINs whose set may need publishing
        self._forced: set[str] = set()  # VINs that booted while a service was ending
        self._awaiting: dict[str, float] = {}  # VIN -> when its unacked newest set was published
        self._overdue: set[str] = set()  # unacked for longer than the ack timeout

    def load(self, sets: Iterable[VehicleSets]) -> None:
        self._sets = {s.vin: s for s in sets}
        self._awaiting = {
            s.vin: s.published_at for s in self._sets.values() if s.published > s.acked and s.published_at
        }

    def reload(self, sets: VehicleSets) -> None:
        """The VIN's sets as stored, after another gateway wrote them (engine/_follow.py)."""
        vin = sets.vin
        self._sets[vin] = sets
        if sets.published > sets.acked and sets.published_at:
            self._awaiting.setdefault(vin, sets.published_at)
        else:
            self._awaiting.pop(vin, None)
            self._overdue.discard(vin)

    def of(self, vin: str) -> VehicleSets:
        return self._sets.get(vin) or VehicleSets(vin)

    def recorded_ids(self, vin: str, version: int) -> tuple[str, ...] | None:
        """The content of `version` when it is the latest recorded one (else ask the ledger)."""
        recorded = self._recorded.get(vin)
        return recorded.entitlement_ids if recorded is not None and recorded.version == version else None

    def next_version(self, vin: str) -> int:
        recorded = self._recorded.get(vin)
        return max(self.of(vin).recorded, recorded.version if recorded else 0) + 1

    # -- which VINs to look at ---------------------------------------------------------------------

    def want(self, vin: str, *, forced: bool = False) -> None:
        self._work.add(vin)
        if forced:
            self._forced.add(vin)

    def candidates(self) -> list[str]:
        return sorted(self._work)

    def is_wanted(self, vin: str) -> bool:
        """`vin` may still need a set published (not settled since it was wanted)."""
        return vin in self._work

    def is_forced(self, vin: str) -> bool:
        return vin in self._forced

    def settled(self, vin: str) -> None:
        """Nothing to publish for `vin` now."""
        self._work.discard(vin)
        self._forced.discard(vin)

    # -- ack timeouts (R13: an unacked set goes out again with the next boot) ---------------------

    def is_overdue(self, vin: str) -> bool:
        return vin in self._overdue

    def newly_overdue(self, now: float, timeout_s: float) -> list[str]:
        out = [vin for vin, at in self._awaiting.items() if now - at >= timeout_s]
        for vin in out:
            del self._awaiting[vin]
            self._overdue.add(vin)
        return out

    # -- after a commit ----------------------------------------------------------------------------

    def committed(
        self, sets: Sequence[SetRecord], published: Sequence[SetMark], acked: Sequence[SetMark]
    ) -> None:
        for r in sets:
            self._recorded[r.vin] = r
            s = self.of(r.vin)
            self._sets[r.vin] = replace(s, recorded=max(s.recorded, r.version))
        for m in published:
            s = self.of(m.vin)
            recorded = self._recorded.get(m.vin)
            if m.version > s.published and recorded is not None and recorded.version == m.version:
                ids = frozenset(recorded.entitlement_ids)
                self._sets[m.vin] = replace(s, published=m.version, published_ids=ids, published_at=m.at)
                self._forced.discard(m.vin)
                self._overdue.discard(m.vin)
                if m.version > s.acked:  # an ack can overtake the publish bookkeeping
                    self._awaiting[m.vin] = m.at
        for m in acked:
            s = self.of(m.vin)
            self._sets[m.vin] = replace(s, acked=max(s.acked, m.version))
            if m.version >= s.published:
                self._overdue.discard(m.vin)
                self._awaiting.pop(m.vin, None)
