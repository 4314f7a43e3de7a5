"""telematics.v1.EntitlementService: grants, cancellations and the event outbox over gRPC.

Handlers stay thin: validate the request, call the engine, convert. Domain errors are turned
into status codes in one place (`_translated`), as documented in entitlements.proto.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Literal

import grpc

from gateway._gen.telematics.v1 import entitlements_pb2 as pb
from gateway._gen.telematics.v1 import entitlements_pb2_grpc, explain_pb2
from gateway.api.errors import ApiError, check_vin, invalid, stream, unary, without_gaps
from gateway.convert import timestamp
from gateway.entitlements import (
    CancelRefused,
    EntitlementError,
    InvalidGrant,
    OrderConflict,
    PermissionRefused,
    TransitionError,
)
from gateway.entitlements.domain.offer import ProductNotOffered, check_grant
from gateway.entitlements.domain.types import GrantRequest
from gateway.entitlements.engine import EntitlementEngine, NotFound
from gateway.entitlements.ledger import Ledger, LedgerError, OutboxEvent
from gateway.entitlements.wire import (
    entitlement_to_proto,
    explanations_to_proto,
    grant_request_from_proto,
)
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.reference.store import ReferenceStore
from gateway.session.hub import EventHub

_REPLAY_CHUNK = 500


def status_of(exc: EntitlementError) -> grpc.StatusCode:
    """The status code of a domain error (entitlements.proto, "Errors")."""
    match exc:
        case InvalidGrant():
            return grpc.StatusCode.INVALID_ARGUMENT
        case PermissionRefused():
            return grpc.StatusCode.PERMISSION_DENIED  # R3 (and R8)
        case OrderConflict():
            return grpc.StatusCode.ALREADY_EXISTS
        case ProductNotOffered():
            return grpc.StatusCode.FAILED_PRECONDITION  # not sold for the car's model
        case NotFound():
            return grpc.StatusCode.NOT_FOUND
        case CancelRefused() | TransitionError():
            return grpc.StatusCode.FAILED_PRECONDITION  # e.g. R15 withdrawal period over
        case _:
            return grpc.StatusCode.FAILED_PRECONDITION


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except EntitlementError as exc:
        raise ApiError(status_of(exc), exc.message) from exc
    except LedgerError as exc:
        # Retrying is safe: a Grant with the same order_id is never granted twice.
        raise ApiError(
            grpc.StatusCode.UNAVAILABLE, "the entitlement ledger is unavailable; retry later"
        ) from exc


def _required(value: str, name: str) -> None:
    if not value:
        raise invalid(f"{name} is required")


class EntitlementService(entitlements_pb2_grpc.EntitlementServiceServicer):
    def __init__(
        self,
        *,
        engine: EntitlementEngine,
        ledger: Ledger,
        hub: EventHub,
        metrics: Metrics,
        reference: ReferenceStore,
    ) -> None:
        """
        engine: the entitlement engine (every change goes through it).
        ledger: read side of the outbox for WatchEntitlementEvents.
        hub: the engine's hub, woken when outbox events are committed.
        metrics: counts calls by method and status code.
        reference: the product catalogue Grant checks orders against (current at each call).
        """
        self._reference = reference
        self._engine = engine
        self._ledger = ledger
        self._hub = hub
        self._metrics = metrics

    @unary("Grant")
    async def Grant(self, request: pb.GrantRequest, context: grpc.aio.ServicerContext) -> pb.Entitlement:
        with _translated():
            order, booked_at_given = grant_request_from_proto(request, self._engine.now())
            e = await self._engine.grant(order, booked_at_given=booked_at_given, check=self._check_product)
        return entitlement_to_proto(e, self._engine.now())

    def _check_product(self, order: GrantRequest, session: VehicleSession | None) -> None:
        # Unknown product: INVALID_ARGUMENT; not sold for the car's known model:
        # FAILED_PRECONDITION; model not known yet: accepted, checked again after the Hello.
        check_grant(self._reference.current, order, session)

    @unary("Cancel")
    async def Cancel(self, request: pb.CancelRequest, context: grpc.aio.ServicerContext) -> pb.CancelResponse:
        _required(request.entitlement_id, "entitlement_id")
        if request.notice_seconds < 0:
            raise invalid(f"notice_seconds must not be negative, got {request.notice_seconds}")
        with _translated():
            e, end, rule = await self._engine.cancel(request.entitlement_id, float(request.notice_seconds))
        resp = pb.CancelResponse(entitlement=entitlement_to_proto(e, self._engine.now()), rule=rule)
        if end is not None:
            resp.effective_end.CopyFrom(timestamp(end))
        return resp

    @unary("Revoke")
    async def Revoke(self, request: pb.RevokeRequest, context: grpc.aio.ServicerContext) -> pb.Entitlement:
        _required(request.entitlement_id, "entitlement_id")
        with _translated():
            e = await self._engine.revoke(request.entitlement_id, request.reason or "revoked_by_backend")
        return entitlement_to_proto(e, self._engine.now())

    @unary("GetEntitlement")
    async def GetEntitlement(
        self, request: pb.GetEntitlementRequest, context: grpc.aio.ServicerContext
    ) -> pb.Entitlement:
        _required(request.entitlement_id, "entitlement_id")
        with _translated():
            e = await self._engine.get(request.entitlement_id)
        return entitlement_to_proto(e, self._engine.now())

    @unary("ListEntitlements")
    async def ListEntitlements(
        self, request: pb.ListEntitlementsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEntitlementsResponse:
        check_vin(request.vin)
        with _translated():
            found = await self._engine.list(request.vin, request.include_ended)
        now = self._engine.now()
        return pb.ListEntitlementsResponse(entitlements=[entitlement_to_proto(e, now) for e in found])

    @unary("SetVehicleOwner")
    async def SetVehicleOwner(
        self, request: pb.SetVehicleOwnerRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetVehicleOwnerResponse:
        check_vin(request.vin)
        _required(request.owner, "owner")
        with _translated():
            await self._engine.set_owner(request.vin, request.owner)
        return pb.SetVehicleOwnerResponse()

    @unary("DeleteAccount")
    async def DeleteAccount(
        self, request: pb.DeleteAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAccountResponse:
        _required(request.account, "account")
        with _translated():
            vins = await self._engine.delete_account(request.account)
        return pb.DeleteAccountResponse(vins=vins)

    @stream("WatchEntitlementEvents")
    async def WatchEntitlementEvents(
        self, request: pb.WatchEntitlementEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EntitlementEvent]:
        if request.vin:
            check_vin(request.vin)

        async def read(after: int) -> list[OutboxEvent]:
            with _translated():
                return await self._ledger.read_events(after, _REPLAY_CHUNK, request.vin)

        async def first() -> int:
            with _translated():
                return await self._ledger.first_cursor()

        # The outbox is pruned like the vehicle event log (entitlement_event_retention):
        # OUT_OF_RANGE once it was pruned past the cursor.
        async for row in self._hub.follow(without_gaps(read, first), request.after_cursor, _REPLAY_CHUNK):
            event = pb.EntitlementEvent.FromString(row.payload)
            event.cursor = row.cursor
            yield event


class EngineExplainer:
    """ExplainService's `EntitlementExplainer` over the engine: which precondition holds each
    pending entitlement back (R12, R13, R17, R18)."""

    def __init__(self, *, engine: EntitlementEngine) -> None:
        """engine: the entitlement engine whose `explain` is converted to the wire."""
        self._engine = engine

    def explain_entitlements(
        self, session: VehicleSession, lang: Literal["en", "de"]
    ) -> list[explain_pb2.EntitlementExplanation]:
        return explanations_to_proto(self._engine.explain(session.vin, lang, session))
