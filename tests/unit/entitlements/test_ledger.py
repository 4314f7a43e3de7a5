"""The ledger, on SQLite and on PostgreSQL (each test runs on both: tests/conftest.py):
entitlements survive reopening, the outbox is written with the change or not at all, order ids
are unique, owners and deleted accounts (R3, R4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from engine_harness import OWNER, VIN, VIN2, at, order

from gateway.entitlements import (
    Entitlement,
    EntitlementKind,
    EntitlementState,
    FodAction,
    LifecycleEvent,
    LifecycleEventKind,
    grant,
)
from gateway.entitlements.ledger import (
    CommandRecord,
    DuplicateOrder,
    Ledger,
    SetConflict,
    SetMark,
    SetRecord,
    VersionConflict,
)
from gateway.store.backends import Backends

NOW = at(2026, 3, 1, 10)


def granted() -> tuple[Entitlement, list[LifecycleEvent]]:
    return grant(order(EntitlementKind.FIXED_TERM, term_months=12, auto_renew=True), NOW, is_owner=True)


MakeBackends = Callable[[], Backends]


async def open_ledger(make: MakeBackends) -> Ledger:
    ledger = make().ledger
    await ledger.open()
    return ledger


async def test_entitlement_round_trips_whole_through_a_reopen(make_backends: MakeBackends) -> None:
    ledger = await open_ledger(make_backends)
    e, events = granted()
    e = replace(e, failures=2, last_failure_at=NOW + 1, billed_at=NOW + 2)
    await ledger.create(e, events)
    await ledger.close()
    ledger = await open_ledger(make_backends)
    assert await ledger.load_live() == [e]
    assert await ledger.find_by_order("order-1") == e
    assert await ledger.get(e.entitlement_id) == e
    await ledger.close()


async def test_an_order_id_is_created_once(make_backends: MakeBackends) -> None:
    ledger = await open_ledger(make_backends)
    e, events = granted()
    await ledger.create(e, events)
    with pytest.raises(DuplicateOrder):
        await ledger.create(e, events)
    assert len(await ledger.read_events(0, 10)) == 1
    await ledger.close()


async def test_a_failed_save_writes_neither_the_change_nor_its_events(make_backends: MakeBackends) -> None:
    ledger = await open_ledger(make_backends)
    e, events = granted()
    await ledger.create(e, events)
    changed = replace(e, state=EntitlementState.DELIVERY_DUE)
    ok = LifecycleEvent(LifecycleEventKind.RENEWED, changed.entitlement_id, VIN, "p", NOW)
    internal = LifecycleEvent(LifecycleEventKind.DELIVERY_DUE, changed.entitlement_id, VIN, "p", NOW)
    with pytest.raises(KeyError):  # internal kinds have no wire form: never in the outbox
        await ledger.save([changed], [ok, internal])
    assert (await ledger.get(changed.entitlement_id)) == e
    assert len(await ledger.read_events(0, 10)) == 1
    await ledger.close()


async def test_outbox_cursors_increase_and_filter_by_vin(make_backends: MakeBackends) -> None:
    ledger = await open_ledger(make_backends)
    a, ea = granted()
    b, eb = grant(order(order_id="o2", vin=VIN2), NOW, is_owner=True)
    await ledger.create(a, ea)
    await ledger.create(b, eb)
    rows = await ledger.read_events(0, 10)
    assert [r.cursor for r in rows] == [1, 2]
    assert [r.vin for r in await ledger.read_events(0, 10, VIN2)] == [VIN2]
    assert await ledger.read_events(2, 10) == []
    await ledger.close()


async def test_sets_and_commands_are_remembered(make_backends: MakeBackends) -> None:
    ledger = await open_ledger(make_backends)
    await ledger.save([], [], sets=[SetRecord(VIN, 1, ("a", "b"), NOW)])
    await ledger.save([], [], sets=[SetRecord(VIN, 2, ("a",), NOW)], published=[SetMark(VIN, 2, NOW + 1)])
    await ledger.save([], [], acked=[SetMark(VIN, 2, NOW + 2)])
    assert await ledger.get_set(VIN, 1) == ("a", "b")
    [sets] = await ledger.load_sets()
    assert (sets.recorded, sets.published, sets.published_ids, sets.acked) == (2, 2, frozenset({"a"}), 2)
    command = CommandRecord("c1", "e1", VIN, FodAction.UNLOCK, NOW, NOW - 600)
    await ledger.save([], [], commands=[command])
    await ledger.save([], [], commands=[replace(command, result_at=NOW + 5, success=True)])
    assert await ledger.get_command("c1") == replace(command, result_at=NOW + 5, success=True)
    await ledger.close()


async def test_deleting_an_account_unlinks_its_vehicles_once(make_backends: MakeBackends) -> None:  # R4
    ledger = await open_ledger(make_backends)
    await ledger.set_owner(VIN, OWNER)
    await ledger.set_owner(VIN2, OWNER)
    assert await ledger.owned_vins(OWNER) == [VIN, VIN2]
    assert await ledger.delete_account(OWNER, NOW) == [VIN, VIN2]
    assert await ledger.get_owner(VIN) is None
    assert await ledger.delete_account(OWNER, NOW + 1) == [VIN, VIN2]  # same answer on a retry
    await ledger.set_owner(VIN, OWNER)  # registered again with the same e-mail (R1)
    assert await ledger.owned_vins(OWNER) == [VIN]
    await ledger.close()


async def _outbox_of(ledger: Ledger, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        e, events = grant(order(EntitlementKind.SERVICE, order_id=f"o{i}"), NOW, is_owner=True)
        await ledger.create(e, events)


async def test_pruning_the_outbox_keeps_the_newest_events_and_cursors_keep_counting(
    make_backends: MakeBackends
) -> None:
    ledger = await open_ledger(make_backends)
    assert (await ledger.first_cursor(), await ledger.prune_events(keep=3)) == (0, 0)
    await _outbox_of(ledger, 10)
    assert await ledger.first_cursor() == 1
    assert await ledger.prune_events(keep=3) == 7
    assert await ledger.first_cursor() == 8
    assert [ev.cursor for ev in await ledger.read_events(0, 100)] == [8, 9, 10]
    assert await ledger.prune_events(keep=3) == 0
    await ledger.close()
    ledger = await open_ledger(make_backends)
    await _outbox_of(ledger, 1, first=10)  # a pruned cursor is never handed out again
    assert [ev.cursor for ev in await ledger.read_events(0, 100)] == [8, 9, 10, 11]
    await ledger.close()


async def test_pruning_the_outbox_leaves_the_entitlements_and_their_delivery_state(
    make_backends: MakeBackends
) -> None:
    # The outbox only feeds WatchEntitlementEvents; what goes to a car is decided from the
    # entitlements, sets and commands, so they must survive any pruning.
    ledger = await open_ledger(make_backends)
    await _outbox_of(ledger, 3)
    live = await ledger.load_live()
    await ledger.prune_events(keep=1)
    assert await ledger.load_live() == live and len(live) == 3
    await ledger.close()


async def test_an_outbox_cursor_beyond_what_the_database_can_store_reads_nothing(
    make_backends: MakeBackends
) -> None:
    ledger = await open_ledger(make_backends)
    await _outbox_of(ledger, 1)
    for after in (2**63 - 1, 2**63, 2**64 - 1):
        assert await ledger.read_events(after, 10) == []
        assert await ledger.read_events(after, 10, VIN) == []
    await ledger.close()


# -- no last-writer-wins (gateway/store/versions.py): two ledgers on one database are two gateways


async def test_an_update_based_on_an_old_read_raises_version_conflict_and_writes_nothing(
    make_backends: MakeBackends,
) -> None:
    a, b = await open_ledger(make_backends), await open_ledger(make_backends)
    e, events = granted()
    await a.create(e, events)
    [seen] = await b.load_live()
    by_b = replace(seen, state=EntitlementState.DELIVERY_DUE, updated_at=NOW + 1)
    await b.save([by_b], [])
    by_a = replace(e, state=EntitlementState.REVOKED, updated_at=NOW + 2)  # from a's older view
    revoked = LifecycleEvent(LifecycleEventKind.REVOKED, e.entitlement_id, VIN, "p", NOW + 2)
    with pytest.raises(VersionConflict):
        await a.save([by_a], [revoked], sets=[SetRecord(VIN, 1, ("x",), NOW)])
    assert await b.get(e.entitlement_id) == by_b
    assert len(await b.read_events(0, 10)) == 1  # the refused save's event is not in the outbox
    assert await b.get_set(VIN, 1) is None  # nor anything else of its transaction
    # Having read the newer entitlement, `a` updates it.
    [fresh] = await a.load_live()
    await a.save([replace(fresh, state=EntitlementState.REVOKED, updated_at=NOW + 3)], [revoked])
    final = replace(by_b, state=EntitlementState.REVOKED, updated_at=NOW + 3)
    assert await b.get(e.entitlement_id) == final
    await a.close()
    await b.close()


async def test_a_conflict_names_the_entitlement_and_a_refresh_lets_the_next_write_through(
    make_backends: MakeBackends,
) -> None:
    a, b = await open_ledger(make_backends), await open_ledger(make_backends)
    e, events = granted()
    await a.create(e, events)
    by_b = replace(e, failures=1, updated_at=NOW + 1)
    await b.save([by_b], [])
    with pytest.raises(VersionConflict) as refused:
        await a.save([replace(e, failures=5, updated_at=NOW + 2)], [])
    assert refused.value.entitlement_ids == (e.entitlement_id,)
    # A plain read keeps a's expectation (its write was based on the older view) ...
    assert await a.get(e.entitlement_id) == by_b
    with pytest.raises(VersionConflict):
        await a.save([replace(by_b, failures=2, updated_at=NOW + 3)], [])
    # ... a refresh replaces it: the next write, based on what is stored, goes through.
    assert await a.refresh(refused.value.entitlement_ids) == [by_b]
    await a.save([replace(by_b, failures=2, updated_at=NOW + 3)], [])
    stored = await b.get(e.entitlement_id)
    assert stored is not None and stored.failures == 2
    assert await a.refresh([]) == []
    await a.close()
    await b.close()


async def test_a_ledger_saves_each_of_its_own_successive_updates(make_backends: MakeBackends) -> None:
    ledger = await open_ledger(make_backends)
    e, events = granted()
    await ledger.create(e, events)
    for i in range(1, 5):
        e = replace(e, failures=i, updated_at=NOW + i)
        await ledger.save([e], [])
    assert await ledger.get(e.entitlement_id) == e
    await ledger.close()


async def test_a_vehicles_entitlements_are_listed_in_grant_order_with_or_without_ended_ones(
    make_backends: MakeBackends,
) -> None:
    ledger = await open_ledger(make_backends)
    made = []
    for i in range(3):
        e, events = grant(order(EntitlementKind.SERVICE, order_id=f"o{i}"), NOW + i, is_owner=True)
        await ledger.create(e, events)
        made.append(e)
    ended = replace(made[1], state=EntitlementState.REVOKED, updated_at=NOW + 9)
    await ledger.save([ended], [])
    assert await ledger.list(VIN, include_ended=True) == [made[0], ended, made[2]]
    assert await ledger.list(VIN, include_ended=False) == [made[0], made[2]]
    assert await ledger.list(VIN2, include_ended=True) == []
    assert await ledger.load_live() == [made[0], made[2]]
    await ledger.close()


async def test_the_latest_command_of_each_live_entitlement_is_found_after_a_restart(
    make_backends: MakeBackends,
) -> None:
    ledger = await open_ledger(make_backends)
    fod, events = grant(order(EntitlementKind.FIXED_TERM, term_months=1), NOW, is_owner=True)
    await ledger.create(fod, events)
    first = CommandRecord("c1", fod.entitlement_id, VIN, FodAction.UNLOCK, NOW)
    second = CommandRecord("c2", fod.entitlement_id, VIN, FodAction.UNLOCK, NOW + 60)
    await ledger.save([], [], commands=[first])
    await ledger.save([], [], commands=[second])
    await ledger.save([], [], commands=[replace(first, result_at=NOW + 90, success=False)])
    gone = CommandRecord("c3", "no-such-entitlement", VIN, FodAction.UNLOCK, NOW)
    await ledger.save([], [], commands=[gone])
    await ledger.close()
    ledger = await open_ledger(make_backends)
    assert await ledger.latest_commands() == [second]
    await ledger.save([replace(fod, state=EntitlementState.REVOKED, updated_at=NOW + 99)], [])
    assert await ledger.latest_commands() == []
    await ledger.close()


async def test_a_set_version_recorded_with_other_content_is_refused_and_nothing_is_written(
    make_backends: MakeBackends,
) -> None:
    """Two gateways recording set N+1 of one car from different views (a membership change):
    the second is refused (SetConflict), so the car never gets two sets under one version."""
    a, b = await open_ledger(make_backends), await open_ledger(make_backends)
    e, events = granted()
    await a.create(e, events)
    await a.save([], [], sets=[SetRecord(VIN, 1, ("x",), NOW)])
    changed = replace(e, failures=1, updated_at=NOW + 1)
    with pytest.raises(SetConflict) as refused:
        await b.save([changed], [], sets=[SetRecord(VIN, 1, ("x", "y"), NOW + 1)],
                     published=[SetMark(VIN, 1, NOW + 1)])
    assert refused.value.vins == (VIN,)
    assert await a.get_set(VIN, 1) == ("x",)
    [sets] = await a.load_sets()
    assert (sets.recorded, sets.published) == (1, 0)  # b's publish mark went with its refusal
    assert await a.get(e.entitlement_id) == e  # and so did the rest of b's transaction
    # The same content again (a retried batch, or a gateway that agrees) is no conflict.
    await b.save([], [], sets=[SetRecord(VIN, 1, ("x",), NOW + 2)], published=[SetMark(VIN, 1, NOW + 2)])
    # On top of what is stored, b records the next version.
    await b.save([], [], sets=[SetRecord(VIN, 2, ("x", "y"), NOW + 3)])
    assert await a.get_set(VIN, 2) == ("x", "y")
    await a.close()
    await b.close()
