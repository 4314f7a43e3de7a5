"""The durable stage alone (gateway/pipeline/durable.py): the entitlement engine before the
store, the writes retried while the database fails with reading held, a step that committed not
repeated. The store is test_pipeline's FakeStore (a Store); the engine a recording callable."""

from __future__ import annotations

from collections.abc import Sequence

from test_pipeline import VIN, FakeStore

from gateway.backoff import Backoff
from gateway.entitlements.ledger import LedgerError
from gateway.entitlements.vehicle import VehicleUpdate
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.pipeline.batches import LogBudget
from gateway.pipeline.durable import DurableStage
from gateway.session.hub import EventHub
from gateway.session.tracker import SessionTracker


class Engine:
    """Stands in for the entitlement engine's on_vehicle_batch; fails `fail` times first."""

    def __init__(self, log: list[str], fail: int = 0) -> None:
        self.log, self.fail = log, fail

    async def __call__(self, updates: Sequence[VehicleUpdate]) -> None:
        if self.fail:
            self.fail -= 1
            self.log.append("engine failed")
            raise LedgerError("ledger unreachable")
        self.log.append(f"engine {len(updates)}")


def stage(store: FakeStore, engine: Engine, metrics: Metrics) -> DurableStage:
    async def sleep(delay: float) -> None:
        store.log.append(f"wait {delay}")

    return DurableStage(
        store=store, hub=EventHub(), metrics=metrics, tracker=SessionTracker(), entitlements=engine,
        backoff=Backoff(initial_s=0.1, max_s=2.0), sleep=sleep, outcome=None,
        hold=lambda: store.log.append("hold"), log_budget=LogBudget(),
    )


async def test_the_engine_goes_before_the_store_and_is_not_repeated_when_the_store_fails() -> None:
    store = FakeStore(fail=1)
    metrics = Metrics()
    durable = stage(store, Engine(store.log), metrics)
    session = VehicleSession(vin=VIN)
    await durable.make_durable([VehicleUpdate(session)], {VIN: session}, [])
    assert store.log == ["engine 1", "commit failed", "hold", "wait 0.1", "commit"]
    assert store.commits == [([VIN], [])]
    sample = metrics.registry.get_sample_value
    assert sample("gateway_store_commit_retries_total", {"step": "store"}) == 1


async def test_a_failing_ledger_is_retried_before_anything_is_written() -> None:
    store = FakeStore()
    metrics = Metrics()
    durable = stage(store, Engine(store.log, fail=2), metrics)
    session = VehicleSession(vin=VIN)
    await durable.make_durable([VehicleUpdate(session)], {VIN: session}, [])
    assert store.log == ["engine failed", "hold", "wait 0.1", "engine failed", "hold", "wait 0.2",
                         "engine 1", "commit"]
    sample = metrics.registry.get_sample_value
    assert sample("gateway_store_commit_retries_total", {"step": "entitlements"}) == 2


async def test_nothing_to_write_writes_nothing_and_skips_the_engine_without_updates() -> None:
    store = FakeStore()
    durable = stage(store, Engine(store.log), Metrics())
    await durable.make_durable([], {}, [])
    assert store.log == [] and store.commits == []
