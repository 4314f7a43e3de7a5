"""Guards against last-writer-wins: the version of each row a writer last read or wrote.

Several gateways sharing one database may hold the same car or entitlement in memory. A write
based on an old read must not replace a newer one. Every vehicle row and every entitlement has
a `version` that each write bumps by one; a writer names the version it last read or wrote and
the database applies the write only when the row is still at that version.

Why a per-row version and not the car's own ordering (connection epoch and last sequence):
sequence epochs are random numbers drawn per head-unit install (gateway/session/sequence.py),
so they have no order, and much of a snapshot changes without a new sequence number (presence
after a timeout, a will, a privacy change seen through the backend). A version the store bumps
orders every write, whatever it changed.

What a refused write does: on PostgreSQL (shared by several gateways) a vehicle snapshot
raises StoreConflict and the whole batch rolls back, its events with it; the pipeline reads the
stored cars and applies the batch again (gateway/pipeline.py). On SQLite (one gateway) the
snapshot is skipped, the batch's events still written (it cannot happen there: see
gateway/store/sqlite.py); `stale` counts either. An entitlement update raises VersionConflict
and its whole transaction rolls back (its outbox events with it). Within one gateway the writes
are serialised, so none of this ever happens to it alone.
"""

from __future__ import annotations


class KnownVersions:
    """Row key -> the version this writer last read or wrote. Owned by one store or ledger;
    touched only where its writes are serialised (the SQLite thread, or under the writer's
    lock on PostgreSQL)."""

    def __init__(self) -> None:
        self._known: dict[str, int] = {}
        self.stale = 0  # writes refused because the row had moved on

    def reset(self, rows: dict[str, int]) -> None:
        """A full load: exactly these rows at these versions."""
        self._known = dict(rows)

    def seen(self, key: str, version: int) -> None:
        """A read of one row: its version becomes the expectation unless one is held already
        (a write based on what this writer had must still be checked against that)."""
        self._known.setdefault(key, version)

    def expected(self, key: str) -> int | None:
        """The version a write of `key` replaces (None: this writer never saw the row)."""
        return self._known.get(key)

    def written(self, versions: dict[str, int]) -> None:
        self._known.update(versions)

    def refreshed(self, versions: dict[str, int]) -> None:
        """Rows read to replace this writer's view of them: their versions become the
        expectation, whatever it was."""
        self._known.update(versions)
