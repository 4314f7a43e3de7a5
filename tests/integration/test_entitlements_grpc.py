"""EntitlementService over a real grpc.aio server and client: the status codes documented in
entitlements.proto, and WatchEntitlementEvents resumed from a cursor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict, Unpack

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway._gen.telematics.v1 import entitlements_pb2_grpc
from gateway.api.entitlements import EntitlementService
from gateway.clock import ManualClock
from gateway.entitlements.engine import EntitlementEngine
from gateway.entitlements.ledger.sqlite import SqliteLedger
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.reference import ReferenceStore
from gateway.session.hub import EventHub

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

VIN = "WP0ZZZ99ZTS392124"
OWNER = "owner@example.com"
BOOKED = datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp()
DAY = 86_400.0


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.seconds = int(seconds)
    return t


@dataclass
class Api:
    stub: entitlements_pb2_grpc.EntitlementServiceStub
    clock: ManualClock
    metrics: Metrics
    sessions: dict[str, VehicleSession]  # what the engine knows of each car (empty: never connected)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = ManualClock(BOOKED)
    metrics = Metrics()
    hub = EventHub()
    ledger = SqliteLedger(path=tmp_path / "entitlements.db")
    await ledger.open()

    async def publish(topic: str, payload: bytes) -> None:
        pass

    sessions: dict[str, VehicleSession] = {}
    engine = EntitlementEngine(
        ledger=ledger, clock=clock, metrics=metrics, publish=publish, session_of=sessions.get, hub=hub
    )
    await engine.start()
    server = grpc.aio.server()
    reference = ReferenceStore.load(REPO)  # the shipped product catalogue
    entitlements_pb2_grpc.add_EntitlementServiceServicer_to_server(
        EntitlementService(engine=engine, ledger=ledger, hub=hub, metrics=metrics, reference=reference),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = entitlements_pb2_grpc.EntitlementServiceStub(channel)
            await stub.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
            yield Api(stub, clock, metrics, sessions)
    finally:
        await server.stop(None)
        await ledger.close()


class GrantFields(TypedDict, total=False):
    """GrantRequest's fields (but order_id) a test may change; mypy checks them against it."""

    vin: str
    product_id: str
    kind: pb.EntitlementKind.ValueType
    purchaser: str
    purchaser_role: pb.PurchaserRole.ValueType
    booked_at: Timestamp | None
    term_end: Timestamp | None
    term_months: int


def grant(order_id: str = "order-1", **changes: Unpack[GrantFields]) -> pb.GrantRequest:
    fields: GrantFields = {
        "vin": VIN,
        "product_id": "remote-services",
        "kind": pb.ENTITLEMENT_KIND_SERVICE,
        "purchaser": OWNER,
        "purchaser_role": pb.PURCHASER_ROLE_OWNER,
        "booked_at": ts(BOOKED),
    }
    fields.update(changes)
    return pb.GrantRequest(order_id=order_id, **fields)


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    code: grpc.StatusCode = err.value.code()
    return code


async def test_grant_is_idempotent_by_order_id(api: Api) -> None:
    first = await api.stub.Grant(grant())
    again = await api.stub.Grant(grant())
    assert first.entitlement_id == again.entitlement_id
    assert first.state == pb.ENTITLEMENT_STATE_PENDING and first.remaining_term_seconds == -1
    changed = grant(product_id="navigation-plus")
    assert await code_of(api.stub.Grant(changed)) is grpc.StatusCode.ALREADY_EXISTS


async def test_grant_without_booking_time_is_still_idempotent(api: Api) -> None:
    first = await api.stub.Grant(grant(booked_at=None))
    api.clock.advance(60)
    again = await api.stub.Grant(grant(booked_at=None))
    assert again.entitlement_id == first.entitlement_id and again.booked_at == first.booked_at


async def test_grant_refusals_have_their_status_codes(api: Api) -> None:
    assert await code_of(api.stub.Grant(grant(vin="BAD"))) is grpc.StatusCode.INVALID_ARGUMENT
    unspecified = grant(kind=pb.ENTITLEMENT_KIND_UNSPECIFIED)
    assert await code_of(api.stub.Grant(unspecified)) is grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(api.stub.Grant(grant(order_id=""))) is grpc.StatusCode.INVALID_ARGUMENT
    both = grant(kind=pb.ENTITLEMENT_KIND_FIXED_TERM, term_months=1, term_end=ts(BOOKED + DAY))
    assert await code_of(api.stub.Grant(both)) is grpc.StatusCode.INVALID_ARGUMENT
    secondary = grant(purchaser_role=pb.PURCHASER_ROLE_SECONDARY_USER)
    assert await code_of(api.stub.Grant(secondary)) is grpc.StatusCode.PERMISSION_DENIED  # R3
    stranger = grant(purchaser="stranger@example.com")
    assert await code_of(api.stub.Grant(stranger)) is grpc.StatusCode.PERMISSION_DENIED


async def test_grant_of_an_unknown_product_is_invalid_argument_and_stores_nothing(api: Api) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.stub.Grant(grant(product_id="no-such-product-xyz"))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown product_id 'no-such-product-xyz'" in (err.value.details() or "")
    listed = await api.stub.ListEntitlements(pb.ListEntitlementsRequest(vin=VIN, include_ended=True))
    assert list(listed.entitlements) == []


async def test_grant_whose_kind_does_not_fit_the_product_is_invalid_argument(api: Api) -> None:
    fod_as_service = grant(product_id="porsche-innodrive", kind=pb.ENTITLEMENT_KIND_SERVICE)
    assert await code_of(api.stub.Grant(fod_as_service)) is grpc.StatusCode.INVALID_ARGUMENT
    service_as_fod = grant(product_id="remote-services", kind=pb.ENTITLEMENT_KIND_FOD_MONTHLY)
    assert await code_of(api.stub.Grant(service_as_fod)) is grpc.StatusCode.INVALID_ARGUMENT


async def test_grant_not_offered_for_the_cars_model_is_failed_precondition_naming_the_model(
    api: Api,
) -> None:
    api.sessions[VIN] = VehicleSession(VIN, model="Macan", model_year=2017)
    pirm = grant(product_id="porsche-intelligent-range-manager", kind=pb.ENTITLEMENT_KIND_FOD_UNLIMITED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.stub.Grant(pirm)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details() or ""
    assert "not offered for the Macan of model year 2017" in details and "Taycan MY2020-" in details
    offered = await api.stub.Grant(grant("order-2", product_id="apple-carplay",
                                         kind=pb.ENTITLEMENT_KIND_FOD_UNLIMITED))
    assert offered.state == pb.ENTITLEMENT_STATE_PENDING


async def test_grant_for_a_car_whose_model_is_not_known_yet_is_accepted(api: Api) -> None:
    # R1: cars are sold before delivery; the model is checked again once the car's Hello tells it.
    pirm = grant(product_id="porsche-intelligent-range-manager", kind=pb.ENTITLEMENT_KIND_FOD_UNLIMITED)
    e = await api.stub.Grant(pirm)
    assert e.state == pb.ENTITLEMENT_STATE_PENDING
    api.sessions[VIN] = VehicleSession(VIN, model="Macan", model_year=2017)
    again = await api.stub.Grant(pirm)  # a retry of the accepted order stays idempotent
    assert again.entitlement_id == e.entitlement_id


async def test_remaining_term_is_in_the_response(api: Api) -> None:  # R11
    e = await api.stub.Grant(grant(kind=pb.ENTITLEMENT_KIND_FIXED_TERM, term_months=1))
    assert e.remaining_term_seconds == 31 * DAY and e.term_end.seconds == BOOKED + 31 * DAY
    api.clock.advance(DAY)
    got = await api.stub.GetEntitlement(pb.GetEntitlementRequest(entitlement_id=e.entitlement_id))
    assert got.remaining_term_seconds == 30 * DAY


async def test_withdrawal_after_the_period_is_a_failed_precondition_that_says_why(api: Api) -> None:
    pdls = "porsche-dynamic-light-system-plus"
    e = await api.stub.Grant(grant(kind=pb.ENTITLEMENT_KIND_FOD_UNLIMITED, product_id=pdls))
    api.clock.advance(15 * DAY)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.stub.Cancel(pb.CancelRequest(entitlement_id=e.entitlement_id))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "14-day withdrawal period" in (err.value.details() or "")


async def test_cancel_states_the_effective_end_and_rule(api: Api) -> None:
    acc = "adaptive-cruise-control"
    e = await api.stub.Grant(grant(kind=pb.ENTITLEMENT_KIND_FOD_MONTHLY, product_id=acc))
    resp = await api.stub.Cancel(pb.CancelRequest(entitlement_id=e.entitlement_id))
    assert resp.rule == "R16"
    assert resp.effective_end.seconds == datetime(2026, 4, 1, tzinfo=UTC).timestamp()
    assert resp.entitlement.effective_end == resp.effective_end


async def test_unknown_ids_and_bad_arguments(api: Api) -> None:
    s = api.stub
    assert await code_of(s.Cancel(pb.CancelRequest(entitlement_id="x"))) is grpc.StatusCode.NOT_FOUND
    assert await code_of(s.Revoke(pb.RevokeRequest(entitlement_id="x"))) is grpc.StatusCode.NOT_FOUND
    get = s.GetEntitlement(pb.GetEntitlementRequest(entitlement_id="x"))
    assert await code_of(get) is grpc.StatusCode.NOT_FOUND
    assert await code_of(s.Cancel(pb.CancelRequest())) is grpc.StatusCode.INVALID_ARGUMENT
    negative = pb.CancelRequest(entitlement_id="x", notice_seconds=-1)
    assert await code_of(s.Cancel(negative)) is grpc.StatusCode.INVALID_ARGUMENT
    bad_list = s.ListEntitlements(pb.ListEntitlementsRequest(vin="nope"))
    assert await code_of(bad_list) is grpc.StatusCode.INVALID_ARGUMENT
    bad_owner = s.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=VIN))
    assert await code_of(bad_owner) is grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(s.DeleteAccount(pb.DeleteAccountRequest())) is grpc.StatusCode.INVALID_ARGUMENT


async def test_revoke_list_and_delete_account(api: Api) -> None:
    e = await api.stub.Grant(grant())
    revoked = await api.stub.Revoke(pb.RevokeRequest(entitlement_id=e.entitlement_id, reason="refund"))
    assert revoked.state == pb.ENTITLEMENT_STATE_REVOKED and revoked.end_reason == "refund"
    assert revoked.remaining_term_seconds == 0
    live = await api.stub.ListEntitlements(pb.ListEntitlementsRequest(vin=VIN))
    every = await api.stub.ListEntitlements(pb.ListEntitlementsRequest(vin=VIN, include_ended=True))
    assert (len(live.entitlements), len(every.entitlements)) == (0, 1)
    deleted = await api.stub.DeleteAccount(pb.DeleteAccountRequest(account=OWNER))
    assert list(deleted.vins) == [VIN]
    assert await code_of(api.stub.Grant(grant("order-2"))) is grpc.StatusCode.PERMISSION_DENIED
    assert api.metrics.registry.get_sample_value(
        "gateway_grpc_requests_total", {"method": "Grant", "code": "PERMISSION_DENIED"}
    ) == 1


async def next_events(stream: AsyncIterator[pb.EntitlementEvent], n: int) -> list[pb.EntitlementEvent]:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(anext(stream), 5))
    return out


async def test_watch_resumed_from_a_cursor_sees_every_event_once(api: Api) -> None:
    first = await api.stub.Grant(grant("o1"))
    await api.stub.Grant(grant("o2", product_id="car-finder"))
    call = api.stub.WatchEntitlementEvents(pb.WatchEntitlementEventsRequest())
    seen = await next_events(aiter(call), 2)
    call.cancel()
    assert [e.kind for e in seen] == [pb.ENTITLEMENT_EVENT_KIND_GRANTED] * 2
    assert seen[0].entitlement_id == first.entitlement_id and seen[0].vin == VIN

    # While nobody watches: a cancel (CANCELLED + REVOKED) and a new grant.
    await api.stub.Cancel(pb.CancelRequest(entitlement_id=first.entitlement_id))
    await api.stub.Grant(grant("o3", product_id="navigation-plus"))

    resumed = api.stub.WatchEntitlementEvents(pb.WatchEntitlementEventsRequest(after_cursor=seen[-1].cursor))
    stream = aiter(resumed)
    missed = await next_events(stream, 3)
    assert [e.kind for e in missed] == [
        pb.ENTITLEMENT_EVENT_KIND_CANCELLED,
        pb.ENTITLEMENT_EVENT_KIND_REVOKED,
        pb.ENTITLEMENT_EVENT_KIND_GRANTED,
    ]
    cursors = [e.cursor for e in seen + missed]
    assert cursors == sorted(set(cursors))  # strictly increasing: nothing twice, nothing skipped

    await api.stub.Grant(grant("o4", product_id="radio-plus"))  # a live event wakes the stream
    [live] = await next_events(stream, 1)
    assert live.kind == pb.ENTITLEMENT_EVENT_KIND_GRANTED and live.cursor == cursors[-1] + 1
    resumed.cancel()


async def test_watch_filters_by_vin(api: Api) -> None:
    other = "WP0ZZZ99ZTS392125"
    await api.stub.SetVehicleOwner(pb.SetVehicleOwnerRequest(vin=other, owner=OWNER))
    await api.stub.Grant(grant("o1"))
    await api.stub.Grant(grant("o2", vin=other))
    call = api.stub.WatchEntitlementEvents(pb.WatchEntitlementEventsRequest(vin=other))
    [event] = await next_events(aiter(call), 1)
    assert event.vin == other
    call.cancel()
    bad = api.stub.WatchEntitlementEvents(pb.WatchEntitlementEventsRequest(vin="bad"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await next_events(aiter(bad), 1)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
