"""A restart storm's entitlement sets go out at most `sets_in_flight` at a time (R13): every
car gets its set, no more than the window await their PUBACK at once, and the failures of one
tick make one warning while each is still counted and retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from engine_harness import OWNER, Bench

from gateway._gen.telematics.v1 import downlink_pb2

CARS = [f"WP0ZZZ99ZTS4{i:05d}" for i in range(40)]


class HeldPubacks:
    """The broker's side of `Bench.on_publish`: each publish waits for its PUBACK until the test
    releases it, so the test sees how many sets are in flight at once."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[None]] = []
        self.most = 0

    async def __call__(self, downlink: downlink_pb2.Downlink) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        self.most = max(self.most, len(self.waiting))
        await fut

    def release(self) -> None:
        for fut in self.waiting:
            fut.set_result(None)
        self.waiting.clear()


async def _until(done: Callable[[], bool]) -> None:
    """Let the loop run until `done` (a bounded number of turns, no clock involved)."""
    for _ in range(10_000):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def _storm(bench: Bench) -> list[str]:
    """Every car with a pending entitlement boots: their sets are due on the next tick."""
    ids = []
    for vin in CARS:
        await bench.engine.set_owner(vin, OWNER)
        ids.append(await bench.grant(vin=vin, order_id=f"order-{vin}"))
        await bench.boot(vin)
    return ids


async def test_a_storms_sets_all_go_out_with_at_most_the_window_awaiting_pubacks(
    make_bench: Callable[..., Any],
) -> None:
    bench: Bench = await make_bench(sets_in_flight=4)
    ids = await _storm(bench)
    broker = HeldPubacks()
    bench.on_publish = broker
    tick = asyncio.create_task(bench.engine.tick())
    rounds = 0
    while not tick.done():
        await _until(lambda: len(broker.waiting) == 4 or tick.done())
        if broker.waiting:
            rounds += 1
        broker.release()
    await tick
    assert broker.most == 4  # the window was used in full, and never exceeded
    assert rounds == len(CARS) // 4
    assert sorted(d.vin for _, d in bench.published) == CARS
    assert [await bench.state(eid) for eid in ids] == ["delivered"] * len(CARS)
    assert bench.metric("gateway_entitlement_downlinks_total", {"kind": "set", "outcome": "ok"}) == len(CARS)


async def test_failed_sets_of_one_tick_make_one_warning_and_are_retried(
    make_bench: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    bench: Bench = await make_bench(sets_in_flight=4)
    ids = await _storm(bench)
    refused = set(CARS[::3])

    async def refuse_some(downlink: downlink_pb2.Downlink) -> None:
        if downlink.vin in refused:
            raise ConnectionError("no PUBACK")

    bench.on_publish = refuse_some
    with caplog.at_level(logging.WARNING, logger="gateway.entitlements.engine"):
        await bench.engine.tick()
    [warning] = [r.getMessage() for r in caplog.records if "publishing set" in r.getMessage()]
    assert f"failed for {len(refused)} of {len(CARS)} cars" in warning and "no PUBACK" in warning
    errors = {"kind": "set", "outcome": "error"}
    assert bench.metric("gateway_entitlement_downlinks_total", errors) == len(refused)
    states = {vin: await bench.state(eid) for vin, eid in zip(CARS, ids, strict=True)}
    assert {vin for vin, state in states.items() if state == "delivery_due"} == refused
    bench.on_publish = None
    await bench.engine.tick()  # the refused ones again, nothing else
    assert [await bench.state(eid) for eid in ids] == ["delivered"] * len(CARS)


async def test_the_window_must_hold_at_least_one_set(make_bench: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="sets_in_flight"):
        await make_bench(sets_in_flight=0)
