"""The engine's in-memory index of live (not REVOKED) entitlements: by id, VIN and order id,
state counts for the gauge, and a heap of term checks so a tick touches only what is due."""

from __future__ import annotations

import heapq
from collections import Counter

from gateway.entitlements.domain.terms import next_term_check_at
from gateway.entitlements.domain.types import Entitlement, EntitlementState


class LiveIndex:
    def __init__(self) -> None:
        self._by_id: dict[str, Entitlement] = {}
        self._by_vin: dict[str, dict[str, None]] = {}  # insertion-ordered id sets
        self._by_order: dict[str, str] = {}
        self._terms: list[tuple[float, str]] = []
        self.state_counts: Counter[EntitlementState] = Counter()

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, entitlement_id: str) -> Entitlement | None:
        return self._by_id.get(entitlement_id)

    def by_order(self, order_id: str) -> Entitlement | None:
        eid = self._by_order.get(order_id)
        return None if eid is None else self._by_id.get(eid)

    def of_vin(self, vin: str) -> list[Entitlement]:
        return [self._by_id[i] for i in self._by_vin.get(vin, ())]

    def put(self, e: Entitlement) -> None:
        """Insert or replace; a REVOKED entitlement leaves the index."""
        eid = e.entitlement_id
        old = self._by_id.pop(eid, None)
        if old is not None:
            self.state_counts[old.state] -= 1
        if e.state is EntitlementState.REVOKED:
            self._by_order.pop(e.order_id, None)
            ids = self._by_vin.get(e.vin)
            if ids is not None:
                ids.pop(eid, None)
                if not ids:
                    del self._by_vin[e.vin]
            return
        self._by_id[eid] = e
        self._by_vin.setdefault(e.vin, {})[eid] = None
        self._by_order[e.order_id] = eid
        self.state_counts[e.state] += 1
        due = next_term_check_at(e)
        if due is not None and (old is None or next_term_check_at(old) != due):
            heapq.heappush(self._terms, (due, eid))

    def reschedule(self, e: Entitlement) -> None:
        """Check `e`'s term again (a tick that took it from the heap could not commit)."""
        due = next_term_check_at(e)
        if due is not None:
            heapq.heappush(self._terms, (due, e.entitlement_id))

    def due_terms(self, now: float) -> list[Entitlement]:
        """Entitlements whose term end or renewal is due at `now` (each once)."""
        due: dict[str, Entitlement] = {}
        while self._terms and self._terms[0][0] <= now:
            at, eid = heapq.heappop(self._terms)
            e = self._by_id.get(eid)
            # Stale heap entries (the term moved, or it ended) are dropped here.
            if e is not None and next_term_check_at(e) == at:
                due[eid] = e
        return list(due.values())
