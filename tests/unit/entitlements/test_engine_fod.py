"""Engine: Functions on Demand are unlocked only in an R17 window (privacy off, online, no
charging cable, switched off, locked, 10 minutes idle), billed exactly once on the car's
confirmation (R14), retried with backoff after a failure (R18), and revoked the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine_harness import VIN, Bench, at

from gateway._gen.telematics.v1 import uplink_pb2
from gateway.clock import ManualClock
from gateway.entitlements import EntitlementKind
from gateway.model import ChargingPlug, LockState, PowerState

FOD = EntitlementKind.FOD_UNLIMITED
MINUTE = 60.0


async def charging_car(bench: Bench) -> None:
    await bench.boot()
    await bench.set_state(
        power=PowerState.ON, lock=LockState.UNLOCKED, charging_plug=ChargingPlug.CONNECTED
    )


async def test_fod_granted_while_charging_is_not_unlocked(bench: Bench, clock: ManualClock) -> None:
    await charging_car(bench)
    eid = await bench.grant(FOD)
    clock.advance(60 * MINUTE)
    await bench.engine.tick()
    assert bench.commands() == [] and await bench.state(eid) == "pending"
    [(_, blockers)] = bench.engine.explain(VIN, "en")
    assert [b.code for b in blockers] == ["charging_cable_connected", "power_on", "unlocked"]
    # The dashboard's "pending by blocker": counted under the first blocker Explain shows.
    assert bench.metric("gateway_fod_waiting", {"blocker": "charging_cable_connected"}) == 1
    assert bench.metric("gateway_fod_waiting", {"blocker": "power_on"}) == 0


async def test_fod_unlocks_after_ten_idle_minutes_and_bills_once(bench: Bench, clock: ManualClock) -> None:
    await charging_car(bench)
    eid = await bench.grant(FOD)
    await bench.set_state(charging_plug=ChargingPlug.DISCONNECTED)
    await bench.set_state(power=PowerState.OFF)
    await bench.set_state(lock=LockState.LOCKED)  # every R17 precondition holds from here
    clock.advance(9 * MINUTE)
    await bench.engine.tick()
    assert bench.commands() == []
    [(_, blockers)] = bench.engine.explain(VIN, "en")
    assert [(b.code, b.rule) for b in blockers] == [("idle_wait", "R17")]
    assert bench.metric("gateway_fod_waiting", {"blocker": "idle_wait"}) == 1
    assert "1 more minutes" in blockers[0].next_step

    clock.advance(1 * MINUTE)
    await bench.engine.tick()
    [command] = bench.commands()
    assert command.action == uplink_pb2.FOD_ACTION_UNLOCK and command.entitlement_id == eid
    assert command.function_id == "fod.matrix_led"
    assert await bench.state(eid) == "unlock_pending"
    assert bench.metric("gateway_fod_waiting", {"blocker": "idle_wait"}) == 0  # its window opened

    clock.advance(2 * MINUTE)
    await bench.fod_result(command, success=True)
    e = await bench.engine.get(eid)
    assert e.state.value == "unlocked" and e.billed_at == clock.now()
    assert await bench.outbox() == ["granted", "unlocked", "billable"]
    assert bench.metric("gateway_entitlement_billable_total") == 1
    assert bench.metric("gateway_fod_unlock_seconds_sum") == 2 * MINUTE

    await bench.engine.tick()
    assert len(bench.commands()) == 1  # nothing more to do


async def test_privacy_mode_in_the_middle_of_the_wait_restarts_it(bench: Bench, clock: ManualClock) -> None:
    await bench.grant(FOD)
    await bench.park()
    clock.advance(5 * MINUTE)
    await bench.privacy(True)
    await bench.privacy(False)  # the wait starts again here
    clock.advance(6 * MINUTE)
    await bench.engine.tick()
    assert bench.commands() == []
    clock.advance(4 * MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 1


async def test_unlocking_the_car_during_the_wait_restarts_it(bench: Bench, clock: ManualClock) -> None:
    await bench.grant(FOD)
    await bench.park()
    clock.advance(8 * MINUTE)
    await bench.set_state(lock=LockState.UNLOCKED)
    await bench.set_state(lock=LockState.LOCKED)
    clock.advance(8 * MINUTE)
    await bench.engine.tick()
    assert bench.commands() == []


async def test_failed_unlock_is_retried_in_the_next_window_with_backoff(
    bench: Bench, clock: ManualClock,
) -> None:
    eid = await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    [first] = bench.commands()
    await bench.fod_result(first, success=False, error="install_failed")
    assert await bench.state(eid) == "failed"
    [(_, blockers)] = bench.engine.explain(VIN, "de")
    assert [b.code for b in blockers] == ["retry_backoff", "unlock_failed"]
    assert "Ladekabel" in blockers[1].next_step  # the R18 steps

    await bench.engine.tick()
    assert len(bench.commands()) == 1  # backoff: 60 s after the first failure
    clock.advance(MINUTE)
    await bench.engine.tick()
    second = bench.commands()[-1]
    assert second.command_id != first.command_id and await bench.state(eid) == "unlock_pending"
    assert bench.metric("gateway_entitlement_retries_total", {"action": "unlock"}) == 1

    await bench.fod_result(second, success=False)
    clock.advance(MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 2  # second failure: 120 s
    clock.advance(MINUTE)
    await bench.engine.tick()
    third = bench.commands()[-1]
    await bench.fod_result(third, success=True)
    assert await bench.outbox() == ["granted", "failed", "failed", "unlocked", "billable"]


async def test_retry_waits_for_a_new_window_when_the_car_was_driven(bench: Bench, clock: ManualClock) -> None:
    await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    await bench.fod_result(bench.commands()[0], success=False)
    await bench.set_state(power=PowerState.ON)  # R18: the driver restarts the car
    await bench.set_state(power=PowerState.OFF)
    clock.advance(5 * MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 1
    clock.advance(5 * MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 2


async def test_duplicate_success_is_billed_once(bench: Bench, clock: ManualClock) -> None:
    await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    [command] = bench.commands()
    await bench.fod_result(command, success=True)
    await bench.fod_result(command, success=True)
    await bench.fod_result(command, success=False)  # late failure after success: ignored
    assert (await bench.outbox()).count("billable") == 1
    assert bench.metric("gateway_entitlement_billable_total") == 1


async def test_unanswered_command_is_sent_again_in_a_later_window(bench: Bench, clock: ManualClock) -> None:
    await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    clock.advance(5 * MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 1
    clock.advance(5 * MINUTE)  # ack_timeout_s = 600
    await bench.engine.tick()
    first, second = bench.commands()
    await bench.fod_result(first, success=True)  # the car did answer the first one
    await bench.fod_result(second, success=True)
    assert (await bench.outbox()).count("billable") == 1


async def test_command_lost_with_the_link_is_sent_again_in_the_next_window_not_after_the_ack_timeout(
    make_bench: Callable[..., Any], clock: ManualClock
) -> None:
    bench: Bench = await make_bench(idle_s=2 * MINUTE, ack_timeout_s=30 * MINUTE)
    await bench.grant(FOD)
    await bench.park()
    clock.advance(2 * MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 1  # published as the car lost its link
    await bench.go_offline()
    clock.advance(MINUTE)
    await bench.park()  # reconnected and parked again: the R17 wait restarts
    clock.advance(MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 1  # the new window is not open yet
    clock.advance(MINUTE + 1)
    await bench.engine.tick()
    assert len(bench.commands()) == 2  # the new window: sent again, not 30 minutes later


async def test_command_is_sent_again_after_the_broker_was_down(bench: Bench, clock: ManualClock) -> None:
    await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    bench.broker_down = True
    await bench.engine.tick()
    assert bench.commands() == []
    bench.broker_down = False
    await bench.engine.tick()
    assert len(bench.commands()) == 1


async def test_monthly_fod_cancelled_is_revoked_in_the_car_at_month_end(
    bench: Bench, clock: ManualClock,
) -> None:
    eid = await bench.grant(EntitlementKind.FOD_MONTHLY)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    await bench.fod_result(bench.commands()[0], success=True)
    _, end, rule = await bench.engine.cancel(eid)
    assert (end, rule) == (at(2026, 4, 1), "R16")

    clock.set(at(2026, 4, 1))
    await bench.engine.tick()
    revoke = bench.commands()[-1]
    assert revoke.action == uplink_pb2.FOD_ACTION_REVOKE and await bench.state(eid) == "revoke_pending"
    await bench.fod_result(revoke, success=True)
    assert await bench.state(eid) == "revoked"
    assert await bench.outbox() == ["granted", "unlocked", "billable", "cancelled", "revoked"]


async def test_revoke_command_waits_for_the_r17_preconditions(bench: Bench, clock: ManualClock) -> None:
    eid = await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    await bench.fod_result(bench.commands()[0], success=True)
    await bench.set_state(charging_plug=ChargingPlug.CONNECTED)
    await bench.engine.cancel(eid)  # R15: withdrawal on the booking day
    clock.advance(60 * MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 1 and await bench.state(eid) == "revoke_pending"
    await bench.set_state(charging_plug=ChargingPlug.DISCONNECTED)
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    assert bench.commands()[-1].action == uplink_pb2.FOD_ACTION_REVOKE


async def test_result_for_another_vehicles_entitlement_is_ignored(bench: Bench, clock: ManualClock) -> None:
    eid = await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    other = "WP0ZZZ99ZTS392199"
    await bench.fod_result(bench.commands()[0], success=True, vin=other)
    assert await bench.state(eid) == "unlock_pending"
