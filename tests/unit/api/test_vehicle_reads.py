"""Where the vehicle API reads sessions (gateway/api/vehicle_reads.py): memory and the store give
the same pages; a store that fails is UNAVAILABLE, without the database's details."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from gateway.api.errors import ApiError
from gateway.api.vehicle_reads import MemoryReads, StoreReads, VehicleReads
from gateway.model import VehicleSession
from gateway.session.tracker import SessionTracker
from gateway.store.sqlite import SqliteStore

VINS = [f"WP0ZZZ99ZTS39{n:04d}" for n in (7, 1, 30, 2, 5)]


async def _pages(reads: VehicleReads) -> list[list[str]]:
    pages, after = [], ""
    while page := await reads.page(after, 2):
        pages.append([s.vin for s in page])
        after = page[-1].vin
    return pages


async def test_memory_and_store_reads_page_the_same_vehicles_in_vin_order(tmp_path: Path) -> None:
    sessions = [VehicleSession(vin=v) for v in VINS]
    store = SqliteStore(path=tmp_path / "gateway.db")
    await store.open()
    try:
        await store.commit_batch(sessions, [])
        memory, stored = MemoryReads(SessionTracker(sessions)), StoreReads(store)
        expected = [sorted(VINS)[0:2], sorted(VINS)[2:4], sorted(VINS)[4:]]
        assert await _pages(memory) == await _pages(stored) == expected
        found = await stored.get(VINS[0])
        assert found is not None and found.vin == VINS[0]
        assert await stored.get("WP0ZZZ99ZTS399999") is None
    finally:
        await store.close()


async def test_a_failing_store_answers_unavailable_without_naming_the_database(tmp_path: Path) -> None:
    reads = StoreReads(SqliteStore(path=tmp_path / "secret-place" / "gateway.db"))  # never opened
    for call in (reads.get(VINS[0]), reads.page("", 10)):
        with pytest.raises(ApiError) as caught:
            await call
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert "secret-place" not in caught.value.message
