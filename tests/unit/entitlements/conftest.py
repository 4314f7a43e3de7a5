from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from engine_harness import OWNER, VIN, VIN2, Bench, at

from gateway.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(at(2026, 3, 1, 10))


@pytest.fixture
async def make_bench(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Callable[..., Any]]:
    """make_bench(**engine kwargs) -> a started Bench (VIN and VIN2 owned by OWNER)."""
    benches: list[Bench] = []

    async def make(**engine_kw: Any) -> Bench:
        bench = Bench(tmp_path / "data" / "entitlements.db", clock, **engine_kw)
        await bench.start()
        await bench.engine.set_owner(VIN, OWNER)
        await bench.engine.set_owner(VIN2, OWNER)
        benches.append(bench)
        return bench

    yield make
    for bench in benches:
        await bench.close()


@pytest.fixture
async def bench(make_bench: Callable[..., Any]) -> Bench:
    b: Bench = await make_bench()
    return b
