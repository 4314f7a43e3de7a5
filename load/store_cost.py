"""What one pipeline batch costs the store: SQLite (the embedded default) next to PostgreSQL,
measured in the same run (python -m load.store_cost).

A batch as the pipeline commits it (gateway/pipeline/): the snapshots of the vehicles whose
state changed in it and the events it produced, in one transaction (`Store.commit_batch`).
For each backend and batch size: ``--batches`` commits, each of ``size`` vehicles out of a
fleet of ``--cars`` (each vehicle's next version, as one gateway writes them) and ``size / 10``
events; reported: milliseconds per batch (p50, p99), microseconds per vehicle written, and
vehicles per second of store time. PostgreSQL: a fresh database on the server at
GATEWAY_BENCH_PG_DSN (a URL of any database there; default the local server on
127.0.0.1:5432 as `postgres`), created and dropped by the run.

The capacity model (docs/capacity.md) divides the fleet's state-changing writes by these.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.model import Bearer, Presence, VehicleSession
from gateway.store.base import PendingEvent, Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from load.bench_db import BenchDatabase, PostgresUnavailable, admin_url
from load.stats import percentile


def _vin(i: int) -> str:
    return f"WP0ZZZ99Z{i:08d}"  # 17 characters, digits only after the prefix (no I, O, Q)


def _batch(fleet: int, size: int, first: int, seq: int) -> tuple[list[VehicleSession], list[PendingEvent]]:
    vehicles = [
        VehicleSession(vin=_vin((first + k) % fleet), bearer=Bearer.EMBEDDED_SIM, presence=Presence.ONLINE,
                       last_sequence=seq, seen_window=(1 << 63) | seq, connection_id=first + k)
        for k in range(size)
    ]
    events = [PendingEvent(v.vin, "state_change", b"\x08\x01" * 40) for v in vehicles[:: 10]]
    return vehicles, events


async def _measure(store: Store, fleet: int, size: int, batches: int) -> dict[str, float]:
    await store.open()
    try:
        await store.load_sessions()  # as a gateway starts: the rows' versions are known
        # Warm: every car of the fleet has a row (updates, not inserts, are what a fleet costs).
        for first in range(0, fleet, 1000):
            vehicles, _ = _batch(fleet, min(1000, fleet - first), first, 1)
            await store.commit_batch(vehicles, [])
        times: list[float] = []
        for b in range(batches):
            vehicles, events = _batch(fleet, size, b * size, b + 2)
            started = time.perf_counter()
            await store.commit_batch(vehicles, events)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await store.close()
    data = sorted(times)
    total_s = sum(times) / 1000
    return {
        "batch_p50_ms": round(percentile(data, 50), 3),
        "batch_p99_ms": round(percentile(data, 99), 3),
        "us_per_vehicle": round(total_s / (size * batches) * 1e6, 2),
        "vehicles_per_s": round(size * batches / total_s),
    }


async def _measure_all(make: Callable[[int], Store], cars: int, sizes: list[int], batches: int,
                       backend: str) -> dict[str, Any]:
    return {f"{backend}/{size}": await _measure(make(size), cars, size, batches) for size in sizes}


def measure(cars: int, sizes: list[int], batches: int, pg_admin: str | None) -> dict[str, Any]:
    """SQLite, then (with `pg_admin`, a URL of the server) PostgreSQL in a fresh database of
    its own; PostgresUnavailable when that server cannot be used."""
    with tempfile.TemporaryDirectory(prefix="store-cost-") as tmp:
        results = asyncio.run(_measure_all(
            lambda size: SqliteStore(path=Path(tmp) / f"gateway-{size}.db"), cars, sizes, batches, "sqlite"))
    if pg_admin:
        db = BenchDatabase(pg_admin)
        db.create()
        try:
            results |= asyncio.run(_measure_all(lambda _size: PostgresStore(url=db.url), cars, sizes, batches,
                                                "postgres"))
        finally:
            db.drop()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.store_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cars", type=int, default=20_000, help="the fleet: rows in the vehicles table")
    ap.add_argument("--sizes", default="10,100,1000", help="vehicles per batch, comma-separated")
    ap.add_argument("--batches", type=int, default=50, help="batches measured per backend and size")
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    try:
        results = measure(a.cars, sizes, a.batches, None if a.no_postgres else admin_url())
    except PostgresUnavailable as exc:
        print(f"{exc} (--no-postgres for SQLite only)", file=sys.stderr)
        return 2
    for key, r in results.items():
        print(f"{key:>16}: batch p50/p99 {r['batch_p50_ms']:.2f} / {r['batch_p99_ms']:.2f} ms, "
              f"{r['us_per_vehicle']:.1f} us per vehicle, {r['vehicles_per_s']:,} vehicles/s")
    if a.out:
        doc = {"cars": a.cars, "batches": a.batches, "results": results}
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
