"""Engine restarts (a new engine over the same database file, as after a crash): nothing
acknowledged is lost and nothing is billed twice (R14)."""

from __future__ import annotations

from engine_harness import VIN, Bench, at, set_ids

from gateway.clock import ManualClock
from gateway.entitlements import EntitlementKind
from gateway.entitlements.ledger.sqlite import SqliteLedger

FOD = EntitlementKind.FOD_UNLIMITED
MINUTE = 60.0


async def test_grant_survives_a_restart_before_delivery(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.restart()
    await bench.boot()
    await bench.engine.tick()
    assert [set_ids(s) for s in bench.sets()] == [[eid]]
    await bench.ack(1)
    assert await bench.state(eid) == "active"


async def test_boot_seen_before_a_restart_still_delivers(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.boot()
    await bench.restart()  # the set was due but not yet published
    await bench.engine.tick()
    assert [set_ids(s) for s in bench.sets()] == [[eid]]


async def test_ack_after_a_restart_finds_the_recorded_set(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    await bench.restart()
    await bench.ack(1)
    assert await bench.state(eid) == "active"
    await bench.grant(order_id="o2", product_id="svc.b")
    await bench.boot()
    await bench.engine.tick()
    assert bench.sets()[-1].version == 2  # versions keep increasing across restarts


async def test_unlock_result_then_restart_then_duplicate_bills_once(bench: Bench, clock: ManualClock) -> None:
    eid = await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    [command] = bench.commands()
    await bench.fod_result(command, success=True)
    await bench.restart()
    await bench.fod_result(command, success=True)  # the broker delivers the result again
    assert await bench.state(eid) == "unlocked"
    assert (await bench.outbox()).count("billable") == 1
    assert bench.metric("gateway_entitlement_billable_total") == 0  # the new engine billed nothing


async def test_result_arriving_after_a_restart_bills_once(bench: Bench, clock: ManualClock) -> None:
    eid = await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    [command] = bench.commands()
    await bench.restart()
    await bench.fod_result(command, success=True)
    await bench.fod_result(command, success=True)
    assert await bench.state(eid) == "unlocked"
    assert (await bench.outbox()).count("billable") == 1


async def test_unanswered_command_is_not_resent_at_once_after_a_restart(
    bench: Bench, clock: ManualClock,
) -> None:
    await bench.grant(FOD)
    await bench.park()
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    await bench.restart()
    await bench.park()  # the idle timer is in memory: the wait starts again
    clock.advance(10 * MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 2  # 20 min > ack_timeout_s since the first one
    clock.advance(MINUTE)
    await bench.engine.tick()
    assert len(bench.commands()) == 2


async def test_term_end_due_during_downtime_is_applied_at_the_first_tick(
    bench: Bench, clock: ManualClock,
) -> None:
    eid = await bench.grant(EntitlementKind.FIXED_TERM, term_end=at(2026, 4, 1))
    await bench.restart()
    clock.set(at(2026, 5, 1))
    await bench.engine.tick()
    assert await bench.state(eid) == "revoked"


async def test_outbox_events_and_state_history_are_written_together(bench: Bench, tmp_path: object) -> None:
    eid = await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    await bench.ack(1)
    assert isinstance(bench.ledger, SqliteLedger)
    history = [(f, t) for _, f, t in await bench.ledger.history(eid)]
    assert history == [(None, "pending"), ("pending", "delivery_due"), ("delivery_due", "delivered"),
                       ("delivered", "active")]  # fmt: skip
    assert await bench.outbox(VIN) == ["granted", "delivered", "active"]
