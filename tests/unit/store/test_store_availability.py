"""Readiness of the databases: probes and the pipeline's commit outcomes, logged per change."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.metrics import Metrics
from gateway.store.availability import StoreAvailability
from gateway.store.base import StoreError


class Switch:
    """A probe whose database is up or down as the test says."""

    def __init__(self) -> None:
        self.down = False
        self.hang = False

    async def probe(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise StoreError("postgresql postgresql://gw:***@db:5432/gw: connection refused")


def up(metrics: Metrics, component: str) -> float | None:
    return metrics.registry.get_sample_value("gateway_store_up", {"component": component})


async def test_a_failing_probe_makes_the_store_unavailable_until_one_succeeds() -> None:
    store, ledger, metrics = Switch(), Switch(), Metrics()
    a = StoreAvailability({"store": store.probe, "ledger": ledger.probe}, metrics)
    await a.probe_once()
    assert a.available and up(metrics, "ledger") == 1
    ledger.down = True
    await a.probe_once()
    assert not a.available and list(a.down) == ["ledger"] and up(metrics, "ledger") == 0
    failures = metrics.registry.get_sample_value
    assert failures("gateway_store_probe_failures_total", {"component": "ledger"}) == 1
    ledger.down = False
    await a.probe_once()
    assert a.available and up(metrics, "ledger") == 1


async def test_a_probe_that_does_not_answer_in_time_counts_as_down() -> None:
    store = Switch()
    store.hang = True
    a = StoreAvailability({"store": store.probe}, Metrics(), timeout_s=0.01)
    await a.probe_once()
    assert a.down == {"store": "no answer within the probe timeout"}


async def test_commit_outcomes_change_readiness_at_once_and_log_only_the_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = StoreAvailability({"store": Switch().probe}, Metrics())
    caplog.set_level(logging.WARNING, "gateway.store.availability")
    for _ in range(5):
        a.report("store", StoreError("postgresql postgresql://gw:***@db:5432/gw: connection refused"))
    assert not a.available
    a.report("store", None)
    assert a.available
    lines = [r.getMessage().split(":")[0] for r in caplog.records]
    assert lines == ["store unavailable", "store available again"]
