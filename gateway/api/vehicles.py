"""telematics.v1.VehicleService: sessions from the in-memory tracker (or, with several gateways
on one database, from the store: gateway/api/vehicle_reads.py), events from the store."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from gateway import topics
from gateway._gen.telematics.v1 import downlink_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.api.errors import ApiError, check_vin, invalid, not_found, stream, unary, without_gaps
from gateway.api.security_codes import SecurityCodeGate
from gateway.api.vehicle_reads import MemoryReads, VehicleReads
from gateway.convert import account_linking_to_proto, vehicle_to_api
from gateway.metrics import Metrics
from gateway.model import Presence, VehicleSession, is_valid_vin
from gateway.reference.store import ReferenceStore
from gateway.rules import linking_facts, remote_command_allowed, security_code_decision
from gateway.session.hub import EventHub
from gateway.session.tracker import SessionTracker
from gateway.store.base import Store, StoredEvent

_PAGE_DEFAULT = 100
_PAGE_MAX = 1000
_REPLAY_CHUNK = 500


def _token(vin: str) -> str:
    return base64.urlsafe_b64encode(vin.encode()).decode()


def _untoken(token: str) -> str:
    try:
        vin = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("page_token is not a token this service issued") from exc
    if not is_valid_vin(vin):
        raise invalid("page_token is not a token this service issued")
    return vin


class VehicleService(vehicles_pb2_grpc.VehicleServiceServicer):
    def __init__(
        self,
        *,
        tracker: SessionTracker,
        store: Store,
        hub: EventHub,
        metrics: Metrics,
        publish: Callable[[str, bytes], Awaitable[None]],
        reference: ReferenceStore,
        security: SecurityCodeGate,
        reads: VehicleReads | None = None,
    ) -> None:
        """publish: QoS 1 to the broker; raises when the broker session is down.
        reference: sim_profiles/ for the R5/R7 linking facts, read at answer time.
        security: the R7 security code check of remote commands.
        reads: where GetVehicle and ListVehicles find sessions; the tracker when None."""
        self._reads = reads or MemoryReads(tracker)
        self._security = security
        self._publish = publish
        self._reference = reference
        self._tracker = tracker
        self._store = store
        self._hub = hub
        self._metrics = metrics

    @unary("GetVehicle")
    async def GetVehicle(
        self, request: vehicles_pb2.GetVehicleRequest, context: grpc.aio.ServicerContext
    ) -> vehicles_pb2.Vehicle:
        check_vin(request.vin)
        session = await self._reads.get(request.vin)
        if session is None:
            raise not_found(f"vehicle {request.vin} has never connected")
        return self._answer(session)

    def _answer(self, session: VehicleSession) -> vehicles_pb2.Vehicle:
        # R5, R7: resolved from the current profiles, not stored with the session snapshot.
        vehicle = vehicle_to_api(session)
        facts = linking_facts(self._reference.current, session)
        vehicle.account_linking.CopyFrom(account_linking_to_proto(facts))
        return vehicle

    @unary("ListVehicles")
    async def ListVehicles(
        self, request: vehicles_pb2.ListVehiclesRequest, context: grpc.aio.ServicerContext
    ) -> vehicles_pb2.ListVehiclesResponse:
        size = request.page_size or _PAGE_DEFAULT
        if not 1 <= size <= _PAGE_MAX:
            raise invalid(f"page_size must be 1..{_PAGE_MAX}, got {request.page_size}")
        after = _untoken(request.page_token) if request.page_token else ""
        # Sorted by VIN so that a token (the last VIN) stays valid while vehicles are added.
        # One more than the page: whether another page follows.
        found = await self._reads.page(after, size + 1)
        page = found[:size]
        resp = vehicles_pb2.ListVehiclesResponse(vehicles=[self._answer(s) for s in page])
        if len(found) > size:
            resp.next_page_token = _token(page[-1].vin)
        return resp

    @stream("WatchVehicleEvents")
    async def WatchVehicleEvents(
        self, request: vehicles_pb2.WatchVehicleEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vehicles_pb2.VehicleEvent]:
        if request.vin:
            check_vin(request.vin)

        def read(after: int) -> Awaitable[list[StoredEvent]]:
            return self._store.read_events(after, _REPLAY_CHUNK, request.vin)

        # OUT_OF_RANGE once the log was pruned past the cursor (event_retention).
        checked = without_gaps(read, self._store.first_cursor)
        async for row in self._hub.follow(checked, request.after_cursor, _REPLAY_CHUNK):
            event = vehicles_pb2.VehicleEvent.FromString(row.payload)
            event.cursor = row.cursor
            yield event

    @unary("SendRemoteCommand")
    async def SendRemoteCommand(
        self, request: vehicles_pb2.SendRemoteCommandRequest, context: grpc.aio.ServicerContext
    ) -> vehicles_pb2.SendRemoteCommandResponse:
        check_vin(request.vin)
        if not request.name:
            raise invalid("name must not be empty")
        # The car as GetVehicle sees it: with several gateways, the one its messages reach may
        # not be this one (the store has what that one committed).
        session = await self._reads.get(request.vin)
        if session is None:
            raise not_found(f"vehicle {request.vin} has never connected")
        decision = remote_command_allowed(session)  # R22: privacy mode refuses remote services
        if not decision.allowed:
            reason = f"{decision.rule} {decision.reason.value}: {decision.detail}"
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, reason)
        # R7: the owner's security code where the car's profile and home country ask for it;
        # checked (and a wrong one counted) before anything reaches the car.
        r7 = security_code_decision(self._reference.current, session)
        await self._security.require(r7, request.vin, request.security_code)
        if session.presence is not Presence.ONLINE:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"vehicle {request.vin} is offline")
        command_id = str(uuid.uuid4())
        down = downlink_pb2.Downlink(vin=request.vin)
        down.sent_at.GetCurrentTime()
        down.remote_command.command_id = command_id
        down.remote_command.name = request.name
        down.remote_command.arguments.update(request.arguments)
        try:
            await self._publish(topics.downlink(request.vin), down.SerializeToString())
        except Exception as exc:
            raise ApiError(grpc.StatusCode.UNAVAILABLE, f"broker session unavailable: {exc}") from exc
        return vehicles_pb2.SendRemoteCommandResponse(command_id=command_id)
