"""The vehicle store, on SQLite and on PostgreSQL (each test runs on both: tests/conftest.py)."""

from collections.abc import Callable, Sequence

import pytest

from gateway.model import Bearer, Presence, VehicleSession
from gateway.store.base import PendingEvent, Store, StoreConflict, StoredEvent, StoreError
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

VIN = "WP0ZZZ99ZTS392124"
MakeStore = Callable[[], Store]


def stale(store: Store) -> int:
    """Snapshots the store refused because the stored row was newer (not in the Store protocol)."""
    assert isinstance(store, SqliteStore | PostgresStore)
    return store.stale_snapshots


async def test_sessions_survive_reopening_the_store(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    s = VehicleSession(vin=VIN, bearer=Bearer.WIFI_HOTSPOT, presence=Presence.ONLINE,
                       last_sequence=42, seen_window=(1 << 63) | 1, connection_id=2**64 - 1)
    await store.commit_batch([s], [])
    await store.close()
    store = make_store()
    await store.open()
    [loaded] = await store.load_sessions()
    await store.close()
    assert (loaded.bearer, loaded.presence) == (Bearer.WIFI_HOTSPOT, Presence.ONLINE)
    assert loaded.last_sequence == 42
    assert loaded.seen_window == (1 << 63) | 1 and loaded.connection_id == 2**64 - 1


async def test_events_get_increasing_cursors_and_read_back_in_order(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    events = [PendingEvent(VIN, "online", b"a"), PendingEvent(VIN, "offline", b"b")]
    written = await store.commit_batch([], events)
    assert [w.cursor for w in written] == [1, 2]
    assert [e.payload for e in await store.read_events(0, 10)] == [b"a", b"b"]
    assert [e.payload for e in await store.read_events(1, 10)] == [b"b"]
    await store.close()


async def test_event_with_a_seen_dedupe_key_is_written_once(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    e = PendingEvent(VIN, "charging_session", b"x", dedupe_key="charging:s1")
    assert len(await store.commit_batch([], [e])) == 1
    assert await store.commit_batch([], [e]) == []
    assert len(await store.read_events(0, 10)) == 1
    await store.close()


async def test_pruning_keeps_the_newest_events(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    await store.commit_batch([], [PendingEvent(VIN, "online", bytes([i])) for i in range(10)])
    assert await store.prune_events(keep=3) == 7
    assert await store.first_cursor() == 8
    await store.close()


async def test_vin_filter_reads_only_that_vehicles_events(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    other = "WP0ZZZ99ZTS392125"
    await store.commit_batch([], [PendingEvent(VIN, "online", b"a"), PendingEvent(other, "online", b"b")])
    assert [e.vin for e in await store.read_events(0, 10, other)] == [other]
    await store.close()


async def test_sequence_epochs_and_heartbeat_interval_survive_reopening_the_store(
    make_store: MakeStore
) -> None:
    store = make_store()
    await store.open()
    s = VehicleSession(vin=VIN, sequence_epoch=2**64 - 1, last_sequence=3, seen_window=0b101,
                       previous_epoch=7, previous_last_sequence=5001, previous_seen_window=1 << 63,
                       heartbeat_interval_s=30)
    await store.commit_batch([s], [])
    await store.close()
    store = make_store()
    await store.open()
    [loaded] = await store.load_sessions()
    await store.close()
    assert (loaded.sequence_epoch, loaded.last_sequence, loaded.seen_window) == (2**64 - 1, 3, 0b101)
    assert (loaded.previous_epoch, loaded.previous_last_sequence, loaded.previous_seen_window) == (
        7, 5001, 1 << 63,
    )
    assert loaded.heartbeat_interval_s == 30


async def test_a_cursor_beyond_what_the_database_can_store_reads_nothing_instead_of_failing(
    make_store: MakeStore
) -> None:
    # Cursors are uint64 on the wire, SQLite integers and PostgreSQL bigints signed 64-bit: 2^63
    # and above used to raise OverflowError (INTERNAL at the gRPC edge).
    store = make_store()
    await store.open()
    await store.commit_batch([], [PendingEvent(VIN, "online", b"a")])
    for after in (2**63 - 1, 2**63, 2**64 - 1):
        assert await store.read_events(after, 10) == []
        assert await store.read_events(after, 10, VIN) == []
    await store.close()


async def test_an_event_key_seen_twice_in_one_batch_is_written_once(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    e = PendingEvent(VIN, "charging_session", b"x", dedupe_key="charging:s2")
    written = await store.commit_batch([], [e, PendingEvent(VIN, "online", b"y"), e])
    assert [w.payload for w in written] == [b"x", b"y"]
    assert [w.cursor for w in written] == [1, 2]
    await store.close()


async def test_a_closed_store_raises_store_error(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    await store.close()
    assert not store.is_open
    with pytest.raises(StoreError):
        await store.read_events(0, 10)
    with pytest.raises(StoreError):
        await store.get_vehicle(VIN)
    with pytest.raises(StoreError):
        await store.list_vehicles("", 10)


# -- no last-writer-wins (gateway/store/versions.py): two stores on one database are two gateways


async def commit_over_newer(
    store: Store, backend: str, vehicles: list[VehicleSession], events: Sequence[PendingEvent] = ()
) -> list[StoredEvent]:
    """Commit snapshots of which one is based on an older view than the stored row: SQLite (one
    gateway) skips it and writes the rest; PostgreSQL (shared) refuses the whole batch."""
    if backend == "sqlite":
        return await store.commit_batch(vehicles, events)
    with pytest.raises(StoreConflict) as refused:
        await store.commit_batch(vehicles, events)
    assert refused.value.vins == (VIN,)
    return []


async def test_a_snapshot_based_on_an_old_read_does_not_replace_a_newer_one(
    make_store: MakeStore, backend: str
) -> None:
    a, b = make_store(), make_store()
    await a.open()
    await a.load_sessions()
    await a.commit_batch([VehicleSession(vin=VIN, presence=Presence.ONLINE, last_sequence=1)], [])
    await b.open()
    [seen] = await b.load_sessions()
    seen.presence, seen.last_sequence = Presence.OFFLINE, 2
    await b.commit_batch([seen], [])
    # `a` still works from its own (older) view of the car: its snapshot is refused.
    old_view = VehicleSession(vin=VIN, presence=Presence.ONLINE, last_sequence=3)
    written = await commit_over_newer(a, backend, [old_view], [PendingEvent(VIN, "online", b"e")])
    assert [e.payload for e in written] == ([b"e"] if backend == "sqlite" else [])
    assert [e.payload for e in await b.read_events(0, 10)] == [e.payload for e in written]
    assert (stale(a), stale(b)) == (1, 0)
    [stored] = await b.load_sessions()
    assert (stored.presence, stored.last_sequence) == (Presence.OFFLINE, 2)
    # Having read the newer row, `a` writes again.
    [fresh] = await a.load_sessions()
    fresh.last_sequence = 4
    await a.commit_batch([fresh], [])
    [stored] = await b.load_sessions()
    assert stored.last_sequence == 4 and stale(a) == 1
    await a.close()
    await b.close()


async def test_a_conflicting_batch_on_postgresql_writes_none_of_its_snapshots_and_events(pg_url: str) -> None:
    a, b = PostgresStore(url=pg_url), PostgresStore(url=pg_url)
    await a.open()
    await b.open()
    other = "WP0ZZZ99ZTS392125"
    await a.load_sessions()
    await a.commit_batch([VehicleSession(vin=VIN, last_sequence=1)], [])
    await b.load_sessions()
    await b.commit_batch([VehicleSession(vin=VIN, last_sequence=2)], [])
    charging = PendingEvent(other, "charging_session", b"c", dedupe_key="charging:s9")
    with pytest.raises(StoreConflict) as refused:
        await a.commit_batch(
            [VehicleSession(vin=other, last_sequence=5), VehicleSession(vin=VIN, last_sequence=3)],
            [PendingEvent(VIN, "state_changed", b"e"), charging],
        )
    assert refused.value.vins == (VIN,)
    assert await b.read_events(0, 10) == [] and await b.get_vehicle(other) is None
    stored = await b.get_vehicle(VIN)
    assert stored is not None and stored.last_sequence == 2
    # Rolled back whole: the charging record's dedupe key was not taken either.
    [fresh] = await a.fresh_sessions([VIN, other])
    fresh.last_sequence = 3
    written = await a.commit_batch([fresh, VehicleSession(vin=other, last_sequence=5)], [charging])
    assert [e.payload for e in written] == [b"c"]
    await a.close()
    await b.close()


async def test_the_refresh_returns_exactly_the_cars_written_elsewhere_or_never_seen(pg_url: str) -> None:
    a, b = PostgresStore(url=pg_url), PostgresStore(url=pg_url)
    await a.open()
    await b.open()
    mine, theirs, unseen, absent = (f"WP0ZZZ99ZTS3921{n}" for n in (30, 31, 32, 33))
    await a.load_sessions()
    await a.commit_batch([VehicleSession(vin=v, last_sequence=1) for v in (mine, theirs)], [])
    await b.load_sessions()
    [seen] = [s for s in await b.load_sessions() if s.vin == theirs]
    seen.last_sequence = 2
    await b.commit_batch([seen, VehicleSession(vin=unseen, last_sequence=9)], [])
    vins = [mine, theirs, unseen, absent]
    fresh = await a.fresh_sessions(vins)
    assert sorted((s.vin, s.last_sequence) for s in fresh) == [(theirs, 2), (unseen, 9)]
    assert await a.fresh_sessions(vins) == []  # now known: one query, nothing to replace
    assert {s.vin for s in await a.fresh_sessions(vins, every=True)} == {mine, theirs, unseen}
    # What was read is what the next write replaces: no conflict.
    for s in fresh:
        s.last_sequence += 1
    await a.commit_batch(fresh, [])
    assert [s.last_sequence for s in await b.fresh_sessions([theirs])] == [3]  # a's write, news to b
    await a.close()
    await b.close()


async def test_a_car_first_written_by_another_gateway_is_not_overwritten_by_one_that_never_read_it(
    make_store: MakeStore, backend: str
) -> None:
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    assert await a.load_sessions() == [] and await b.load_sessions() == []
    await b.commit_batch([VehicleSession(vin=VIN, last_sequence=7)], [])
    await commit_over_newer(a, backend, [VehicleSession(vin=VIN, last_sequence=1)])
    [stored] = await b.load_sessions()
    assert stored.last_sequence == 7 and stale(a) == 1
    await a.close()
    await b.close()


async def test_a_store_writes_each_of_its_own_successive_snapshots(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    await store.load_sessions()
    for seq in range(1, 6):
        await store.commit_batch([VehicleSession(vin=VIN, last_sequence=seq)], [])
    [stored] = await store.load_sessions()
    assert stored.last_sequence == 5 and stale(store) == 0
    await store.close()


# -- reads for the vehicle API (several gateways: what the car's own gateway wrote)


async def test_a_stored_vehicle_reads_back_by_vin_and_an_unknown_one_is_none(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    await store.commit_batch([VehicleSession(vin=VIN, bearer=Bearer.WIFI_HOTSPOT, presence=Presence.ONLINE,
                                             visited_country="AT", last_sequence=9)], [])
    found = await store.get_vehicle(VIN)
    assert found is not None
    assert (found.bearer, found.presence, found.visited_country, found.last_sequence) == (
        Bearer.WIFI_HOTSPOT, Presence.ONLINE, "AT", 9,
    )
    assert await store.get_vehicle("WP0ZZZ99ZTS392199") is None
    await store.close()


async def test_vehicles_list_in_vin_order_a_page_after_a_vin(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    vins = [f"WP0ZZZ99ZTS39{n:04d}" for n in (7, 1, 30, 2, 5)]
    await store.commit_batch([VehicleSession(vin=v) for v in vins], [])
    first = await store.list_vehicles("", 2)
    assert [s.vin for s in first] == sorted(vins)[:2]
    rest = await store.list_vehicles(first[-1].vin, 10)
    assert [s.vin for s in rest] == sorted(vins)[2:]
    assert await store.list_vehicles(sorted(vins)[-1], 10) == []
    await store.close()


async def test_reading_a_vehicle_another_gateway_wrote_does_not_let_this_one_overwrite_it(
    make_store: MakeStore, backend: str
) -> None:
    # API reads are not the pipeline's view: they must not move the version guard, or a gateway
    # that answered GetVehicle would overwrite the car's owner's newer snapshot with its own.
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    assert await a.load_sessions() == [] and await b.load_sessions() == []
    await b.commit_batch([VehicleSession(vin=VIN, last_sequence=7)], [])
    assert (await a.get_vehicle(VIN)) is not None and len(await a.list_vehicles("", 10)) == 1
    await commit_over_newer(a, backend, [VehicleSession(vin=VIN, last_sequence=1)])
    found = await b.get_vehicle(VIN)
    assert found is not None and found.last_sequence == 7 and stale(a) == 1
    await a.close()
    await b.close()
