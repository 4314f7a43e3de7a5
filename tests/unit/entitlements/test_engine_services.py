"""Engine: services reach the car after its next boot while online (R13), only where they are
offered (R12), become active on the car's ack, and leave the car when their term ends (R10)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine_harness import VIN, VIN2, Bench, at, set_ids

from gateway._gen.telematics.v1 import downlink_pb2
from gateway.clock import ManualClock
from gateway.entitlements import EntitlementKind
from gateway.model import VehicleSession


async def test_service_granted_while_car_is_off_waits_for_a_boot_while_online(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.engine.tick()
    assert bench.published == []

    await bench.boot(boot=False)  # a reconnect is not a restart (R13)
    await bench.engine.tick()
    assert bench.published == [] and await bench.state(eid) == "pending"

    await bench.boot()
    await bench.engine.tick()
    [s] = bench.sets()
    assert (s.version, set_ids(s)) == (1, [eid])
    assert await bench.state(eid) == "delivered"

    await bench.ack(1)
    assert await bench.state(eid) == "active"
    assert await bench.outbox() == ["granted", "delivered", "active"]


async def test_set_goes_to_the_downlink_topic_of_its_vin(bench: Bench) -> None:
    await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    [(topic, downlink)] = bench.published
    assert topic == f"v1/vehicles/{VIN}/down" and downlink.vin == VIN


async def test_boot_while_offline_in_the_meantime_does_not_deliver(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.boot()
    await bench.go_offline()
    await bench.engine.tick()
    assert bench.published == []
    await bench.boot(boot=False)
    await bench.engine.tick()  # online again: the set due since the boot goes out now
    assert [set_ids(s) for s in bench.sets()] == [[eid]]


async def test_service_not_offered_in_the_visited_country_waits_for_a_boot_where_it_is(
    make_bench: Callable[..., Any],
) -> None:
    def offered(session: VehicleSession, product: str) -> tuple[bool, str]:
        return (session.visited_country != "CH", "no local partner")

    bench: Bench = await make_bench(service_available=offered)
    eid = await bench.grant()
    await bench.boot(country="CH")
    await bench.engine.tick()
    assert bench.published == [] and await bench.state(eid) == "pending"
    [(_, blockers)] = bench.engine.explain(VIN, "en")
    assert "unavailable_in_country" in [b.code for b in blockers]
    assert {b.rule for b in blockers} == {"R12", "R13"}

    await bench.boot(country="DE")
    await bench.engine.tick()
    assert [set_ids(s) for s in bench.sets()] == [[eid]]


async def test_explain_says_a_restart_while_online_is_needed(bench: Bench) -> None:
    await bench.grant()
    await bench.boot(boot=False)
    [(_, en)] = bench.engine.explain(VIN, "en")
    [(_, de)] = bench.engine.explain(VIN, "de")
    assert [(b.code, b.rule) for b in en] == [("restart_required", "R13")]
    assert en[0].next_step.startswith("Restart") and de[0].next_step.startswith("Starten Sie")


async def test_unacked_set_is_sent_again_on_the_next_boot(bench: Bench, clock: ManualClock) -> None:
    eid = await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    clock.advance(601)
    await bench.engine.tick()
    assert bench.metric("gateway_entitlement_ack_timeouts_total") == 1
    [(_, blockers)] = bench.engine.explain(VIN, "en")
    assert [b.code for b in blockers] == ["ack_overdue"]

    await bench.boot()
    await bench.engine.tick()
    assert [(s.version, set_ids(s)) for s in bench.sets()] == [(1, [eid]), (2, [eid])]
    await bench.ack(2)
    assert await bench.state(eid) == "active"


async def test_late_ack_of_the_first_set_still_activates(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    await bench.boot()  # restarted before acking: the set goes out again
    await bench.engine.tick()
    await bench.ack(1)
    assert await bench.state(eid) == "active"
    assert (await bench.outbox()).count("active") == 1


async def test_ack_overtaking_the_publish_bookkeeping_still_reads_delivered_then_active(
    bench: Bench, clock: ManualClock
) -> None:
    async def car_acks_at_once(downlink: downlink_pb2.Downlink) -> None:
        await bench.ack(downlink.entitlement_set.version)

    bench.on_publish = car_acks_at_once
    eid = await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    assert await bench.state(eid) == "active"
    assert await bench.outbox() == ["granted", "delivered", "active"]
    clock.advance(3600)
    await bench.engine.tick()
    assert bench.metric("gateway_entitlement_ack_timeouts_total") == 0


async def test_ack_naming_other_ids_does_not_activate(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    await bench.ack(1, ids=("something-else",))
    assert await bench.state(eid) == "delivered"


async def test_a_new_set_holds_every_active_service(bench: Bench) -> None:
    first = await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    await bench.ack(1)
    second = await bench.grant(order_id="order-2", product_id="svc.navigation_plus")
    await bench.boot()
    await bench.engine.tick()
    assert set(set_ids(bench.sets()[-1])) == {first, second}


async def test_set_is_published_again_when_the_broker_was_down(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.boot()
    bench.broker_down = True
    await bench.engine.tick()
    assert await bench.state(eid) == "delivery_due"
    assert bench.metric("gateway_entitlement_downlinks_total", {"kind": "set", "outcome": "error"}) == 1
    bench.broker_down = False
    await bench.engine.tick()
    [s] = bench.sets()
    assert set_ids(s) == [eid] and await bench.state(eid) == "delivered"
    await bench.ack(s.version)
    assert await bench.state(eid) == "active"


async def test_fixed_term_end_sends_a_set_without_it_and_revokes_on_ack(
    bench: Bench, clock: ManualClock,
) -> None:
    keep = await bench.grant(order_id="keep")
    ends = await bench.grant(
        EntitlementKind.FIXED_TERM, order_id="ends", product_id="svc.weather", term_end=at(2026, 4, 1)
    )
    await bench.boot()
    await bench.engine.tick()
    await bench.ack(1)
    assert await bench.state(ends) == "active"

    clock.set(at(2026, 4, 1))
    await bench.engine.tick()
    assert await bench.state(ends) == "revoke_pending"
    assert set_ids(bench.sets()[-1]) == [keep]  # R10: the car is told to drop it
    await bench.ack(bench.sets()[-1].version)
    assert await bench.state(ends) == "revoked"
    assert (await bench.outbox()).count("revoked") == 1


async def test_auto_renewal_keeps_the_service_and_tells_the_backend(bench: Bench, clock: ManualClock) -> None:
    eid = await bench.grant(EntitlementKind.FIXED_TERM, term_months=1, auto_renew=True)
    await bench.boot()
    await bench.engine.tick()
    await bench.ack(1)
    clock.set(at(2026, 4, 1, 10))
    await bench.engine.tick()
    e = await bench.engine.get(eid)
    assert e.state.value == "active" and e.renewals == 1 and e.term_end == at(2026, 5, 1, 10)
    assert (await bench.outbox())[-1] == "renewed"
    assert not bench.sets()[0].items[0].HasField("valid_until")  # renews: no end told to the car


async def test_revoked_while_the_car_is_offline_leaves_on_the_next_connect(bench: Bench) -> None:
    eid = await bench.grant()
    await bench.boot()
    await bench.engine.tick()
    await bench.ack(1)
    await bench.go_offline()
    await bench.engine.revoke(eid, "fraud")
    await bench.engine.tick()
    assert len(bench.sets()) == 1
    await bench.boot(boot=False)
    await bench.engine.tick()
    assert set_ids(bench.sets()[-1]) == []
    await bench.ack(2)
    assert await bench.state(eid) == "revoked"


async def test_gauge_counts_live_entitlements_by_state(bench: Bench) -> None:
    await bench.grant()
    await bench.grant(EntitlementKind.FOD_UNLIMITED, order_id="fod")
    assert bench.metric("gateway_entitlements", {"state": "pending"}) == 2
    await bench.boot()
    await bench.engine.tick()
    assert bench.metric("gateway_entitlements", {"state": "pending"}) == 1
    assert bench.metric("gateway_entitlements", {"state": "delivered"}) == 1
    assert bench.metric("gateway_entitlement_delivery_seconds_count") == 1


async def test_unavailable_service_explanation_never_names_the_country_in_privacy_mode(
    make_bench: Callable[..., Any]
) -> None:
    # R22: the visited country is a coarse location; Explain texts leave the gateway, so they
    # do not name it while privacy covers all services (the hook's own detail, which the
    # engine logs, is redacted where it is made: test_reference_hooks.py).
    def offered(session: VehicleSession, product: str) -> tuple[bool, str]:
        return (session.visited_country != "CH", "car-finder is not offered in Switzerland (CH)")

    bench: Bench = await make_bench(service_available=offered)
    await bench.grant()
    await bench.privacy(True)
    await bench.boot(country="CH")
    await bench.engine.tick()
    for lang in ("en", "de"):
        [(_, blockers)] = bench.engine.explain(VIN, lang)
        [blocker] = [b for b in blockers if b.code == "unavailable_in_country"]
        assert "CH" not in blocker.next_step and "Switzerland" not in blocker.next_step


async def test_delivery_backlog_is_the_age_of_the_oldest_boot_whose_set_has_not_gone_out(
    bench: Bench,
) -> None:
    await bench.grant()
    await bench.engine.tick()
    assert bench.metric("gateway_entitlement_delivery_backlog_seconds") == 0  # no boot: nothing due
    bench.broker_down = True
    await bench.boot()
    await bench.engine.tick()
    bench.clock.advance(90)
    await bench.engine.tick()
    assert bench.metric("gateway_entitlement_delivery_backlog_seconds") == 90  # R13: still unsent

    bench.broker_down = False
    await bench.engine.tick()
    assert len(bench.sets()) == 1
    assert bench.metric("gateway_entitlement_delivery_backlog_seconds") == 0


async def test_delivery_backlog_leaves_out_a_car_that_went_offline_after_its_boot(bench: Bench) -> None:
    await bench.grant()
    bench.broker_down = True
    await bench.boot()
    bench.clock.advance(30)
    await bench.engine.tick()
    assert bench.metric("gateway_entitlement_delivery_backlog_seconds") == 30
    await bench.go_offline()  # R13: the set waits for the next boot while online
    await bench.engine.tick()
    assert bench.metric("gateway_entitlement_delivery_backlog_seconds") == 0


async def test_sets_of_cars_booting_together_do_not_wait_for_each_others_puback(bench: Bench) -> None:
    """A restart storm (R13): the sets recorded in one tick go out together, not one broker
    round trip after the other. The first publish is held open until the second one started."""
    first = await bench.grant()
    second = await bench.grant(order_id="order-2", vin=VIN2)
    await bench.boot(VIN)
    await bench.boot(VIN2)
    both_started = asyncio.Event()

    async def puback_after_both(_: downlink_pb2.Downlink) -> None:
        if len(bench.published) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 5.0)  # one at a time: never set, times out

    bench.on_publish = puback_after_both
    await bench.engine.tick()
    assert (len(bench.sets(VIN)), len(bench.sets(VIN2))) == (1, 1)
    assert (await bench.state(first), await bench.state(second)) == ("delivered", "delivered")
