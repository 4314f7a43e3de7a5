"""Pruning the SQLite event log runs in steps on the database thread (gateway/store/sqlite_thread.py),
so the readiness probe (and a commit) queued behind a long prune waits for one step, not the
whole prune: a store that is only busy pruning is not reported unavailable."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.store.base import PendingEvent
from gateway.store.sqlite import SqliteStore

VIN = "WP0ZZZ99ZTS392124"


async def test_a_probe_queued_behind_a_long_prune_answers_before_the_prune_ends(tmp_path: Path) -> None:
    store = SqliteStore(path=tmp_path / "gateway.db")
    await store.open()
    try:
        await store.commit_batch([], [PendingEvent(VIN, "online", bytes([i % 256])) for i in range(1000)])
        store.prune_chunk = 50  # 20 steps
        prune = asyncio.create_task(store.prune_events(keep=10))
        await asyncio.sleep(0)  # the prune's first step is queued on the database thread
        await store.probe()  # queued after it
        # The probe's answer came after one step: the prune still has steps to go. (Before
        # steps, the prune was one job ahead of the probe and had ended by now.)
        assert not prune.done()
        assert await prune == 990
        assert await store.first_cursor() == 991
        # A later prune with nothing beyond `keep` takes one step and deletes nothing.
        assert await store.prune_events(keep=10) == 0
    finally:
        await store.close()
