"""Who may call what: the permission table, the one check at the gRPC edge, the audit log.

Every call to a gateway service carries ``authorization: Bearer <id>.<secret>`` in its gRPC
metadata (gateway/security/credentials.py). ``AuthInterceptor`` runs before any handler and
before the request is parsed:
  - no credential, a malformed one, an unknown id or a wrong secret: UNAUTHENTICATED;
  - a valid credential without the method's scope (``METHOD_SCOPES``): PERMISSION_DENIED;
    ``admin`` implies every scope;
  - grpc.health.v1 and server reflection stay open (load balancers and grpcurl need them).
A method missing from ``METHOD_SCOPES`` is refused for everyone (fail closed); a unit test
checks the table against the service descriptors so a new RPC cannot be forgotten.
Error messages name the scope and the credential id, never the token.

Audit: every call of a method in ``AUDITED`` (state changes on behalf of someone: grants,
cancellations, revocations, account deletion, owner changes, remote commands, reloads, R7 code
changes and resets; never a code) writes
one line to the ``gateway.audit`` logger with the caller's credential id, the method, the
request fields the table names and the status code, also when refused, and counts it in
``gateway_audit_events_total{method,code}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc

from gateway._gen.telematics.v1 import (
    entitlements_pb2,
    explain_pb2,
    security_codes_pb2,
    telemetry_pb2,
    vehicles_pb2,
)
from gateway.metrics import Metrics
from gateway.security.credentials import Credential, CredentialSource

log = logging.getLogger(__name__)
audit_log = logging.getLogger("gateway.audit")

METADATA_KEY = "authorization"
SCHEME = "bearer"

_VEHICLES = vehicles_pb2.DESCRIPTOR.services_by_name["VehicleService"].full_name
_TELEMETRY = telemetry_pb2.DESCRIPTOR.services_by_name["TelemetryService"].full_name
_EXPLAIN = explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name
_ENTITLEMENTS = entitlements_pb2.DESCRIPTOR.services_by_name["EntitlementService"].full_name
_SECURITY_CODES = security_codes_pb2.DESCRIPTOR.services_by_name["SecurityCodeService"].full_name


def method_name(service: str, method: str) -> str:
    """The full gRPC method name, as the server sees it: ``/package.Service/Method``."""
    return f"/{service}/{method}"


# Permissions as a value: full method name -> the scope a credential needs to call it.
# New RPCs add a row here (the completeness test fails until they do).
METHOD_SCOPES: dict[str, str] = {
    method_name(_VEHICLES, "GetVehicle"): "vehicles:read",
    method_name(_VEHICLES, "ListVehicles"): "vehicles:read",
    method_name(_VEHICLES, "WatchVehicleEvents"): "events:read",
    method_name(_VEHICLES, "SendRemoteCommand"): "commands:send",
    method_name(_TELEMETRY, "SubscribeTelemetry"): "telemetry:read",
    method_name(_EXPLAIN, "Explain"): "vehicles:read",
    # Swaps the reference data every decision is made with: operators only.
    method_name(_EXPLAIN, "ReloadReferenceData"): "admin",
    method_name(_ENTITLEMENTS, "Grant"): "entitlements:write",
    method_name(_ENTITLEMENTS, "Cancel"): "entitlements:write",
    method_name(_ENTITLEMENTS, "Revoke"): "entitlements:write",
    method_name(_ENTITLEMENTS, "GetEntitlement"): "entitlements:read",
    method_name(_ENTITLEMENTS, "ListEntitlements"): "entitlements:read",
    # The owner decides who may buy for the car (R3): a write like a grant.
    method_name(_ENTITLEMENTS, "SetVehicleOwner"): "entitlements:write",
    # Erases an account's link to its cars (R6): irreversible, operators only.
    method_name(_ENTITLEMENTS, "DeleteAccount"): "admin",
    method_name(_ENTITLEMENTS, "WatchEntitlementEvents"): "entitlements:read",
    # R7: a scope of its own, so a backend that may send commands cannot also set the first
    # code it would then use.
    method_name(_SECURITY_CODES, "SetSecurityCode"): "security_codes:write",
    # Removes a protection (support, after verifying the person): operators only.
    method_name(_SECURITY_CODES, "ResetSecurityCode"): "admin",
}

# Services that answer without a credential.
OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})

PLAIN = "plain"
# Account ids are e-mail addresses (R1): the audit line carries a SHA-256 prefix instead, so an
# auditor who knows the account can find its lines, but the log holds no address (and an
# erased account, R6, is not kept alive in the log).
HASHED = "hashed"
AUDIT_VALUE_MAX = 128  # an oversized field (refused later as INVALID_ARGUMENT) is clipped

# Audited methods -> the request fields its audit line carries (and how).
AUDITED: dict[str, tuple[tuple[str, str], ...]] = {
    method_name(_ENTITLEMENTS, "Grant"): (("order_id", PLAIN), ("vin", PLAIN), ("product_id", PLAIN)),
    method_name(_ENTITLEMENTS, "Cancel"): (("entitlement_id", PLAIN),),
    method_name(_ENTITLEMENTS, "Revoke"): (("entitlement_id", PLAIN),),
    method_name(_ENTITLEMENTS, "SetVehicleOwner"): (("vin", PLAIN), ("owner", HASHED)),
    method_name(_ENTITLEMENTS, "DeleteAccount"): (("account", HASHED),),
    method_name(_VEHICLES, "SendRemoteCommand"): (("vin", PLAIN), ("name", PLAIN)),
    method_name(_EXPLAIN, "ReloadReferenceData"): (),
    method_name(_SECURITY_CODES, "SetSecurityCode"): (("account", HASHED),),  # never the codes
    method_name(_SECURITY_CODES, "ResetSecurityCode"): (("account", HASHED),),
}

ANONYMOUS = "-"
Metadata = Sequence[tuple[str, str | bytes]]


def short_name(method: str) -> str:
    return method.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Decision:
    """The edge's verdict on one call: `code` None means it may proceed."""

    caller: str  # the credential id, or ANONYMOUS
    code: grpc.StatusCode | None = None
    message: str = ""
    reason: str = ""


def bearer_token(metadata: Metadata | None) -> str | None:
    """The token of the one ``authorization: Bearer <token>`` entry; None when missing;
    "" when malformed (several entries, another scheme, binary value)."""
    values = [v for k, v in (metadata or ()) if k.lower() == METADATA_KEY]
    if not values:
        return None
    if len(values) > 1 or not isinstance(values[0], str):
        return ""
    scheme, _, token = values[0].strip().partition(" ")
    return token.strip() if scheme.lower() == SCHEME else ""


def decide(method: str, metadata: Metadata | None, verify: Callable[[str], Credential | None]) -> Decision:
    token = bearer_token(metadata)
    if token is None:
        return Decision(
            ANONYMOUS, grpc.StatusCode.UNAUTHENTICATED,
            f"{short_name(method)} needs a credential: send the metadata"
            " 'authorization: Bearer <id>.<secret>' (README: Backend authentication)",
            "missing_credential",
        )
    credential = verify(token) if token else None
    if credential is None:
        # Never echo the token, not even in part.
        return Decision(
            ANONYMOUS, grpc.StatusCode.UNAUTHENTICATED,
            "the credential is malformed, unknown or wrong", "invalid_credential",
        )
    scope = METHOD_SCOPES.get(method)
    if scope is None:
        return Decision(
            credential.id, grpc.StatusCode.PERMISSION_DENIED,
            f"{short_name(method)} has no scope in the permission table; nobody may call it",
            "missing_scope",
        )
    if not credential.allows(scope):
        return Decision(
            credential.id, grpc.StatusCode.PERMISSION_DENIED,
            f"credential {credential.id!r} lacks the scope {scope!r} that {short_name(method)} needs",
            "missing_scope",
        )
    return Decision(credential.id)


def audit_fields(method: str, request: object) -> list[tuple[str, str]]:
    out = []
    for name, how in AUDITED.get(method, ()):
        raw = getattr(request, name, "")
        value = raw if isinstance(raw, str) else ""
        if how == HASHED:
            value = "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:16] if value else ""
        out.append((name, value[:AUDIT_VALUE_MAX]))
    return out


def audit_line(
    method: str, caller: str, code: grpc.StatusCode, peer: str, fields: list[tuple[str, str]]
) -> str:
    # JSON-quoted values: a newline or quote inside an order id cannot forge a second line.
    parts = [f"method={short_name(method)}", f"caller={json.dumps(caller)}", f"code={code.name}",
             f"peer={json.dumps(peer)}"]
    parts += [f"{name}={json.dumps(value)}" for name, value in fields]
    return "audit " + " ".join(parts)


def _status(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else default


class Handler(Protocol):
    """What the interceptor reads of a grpc.RpcMethodHandler (grpc ships no type stubs)."""

    request_streaming: bool
    response_streaming: bool
    request_deserializer: Callable[[bytes], Any] | None
    response_serializer: Callable[[Any], bytes] | None
    unary_unary: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]] | None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """The one authentication and authorization check of the gRPC server (module docstring)."""

    def __init__(self, *, credentials: CredentialSource, metrics: Metrics) -> None:
        self._credentials = credentials
        self._metrics = metrics
        for method in AUDITED:  # known labels: every audited method x every status code
            for code in grpc.StatusCode:
                metrics.audit_events.labels(short_name(method), code.name)

    def _verify(self, token: str) -> Credential | None:
        store, error = self._credentials.current()
        if error:
            log.error("%s", error)
        return store.verify(token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        if method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:  # not a method of this server: gRPC answers UNIMPLEMENTED
            return handler
        metadata = handler_call_details.invocation_metadata
        decision = decide(method, metadata, self._verify)
        if decision.code is not None:
            self._metrics.grpc_auth_denied.labels(decision.reason).inc()
            if method in METHOD_SCOPES:
                self._metrics.grpc_requests.labels(short_name(method), decision.code.name).inc()
            return self._denied(handler, method, decision)
        if method in AUDITED:
            return self._audited(handler, method, decision.caller)
        return handler

    def _audit(self, method: str, caller: str, code: grpc.StatusCode, peer: str, request: object) -> None:
        self._metrics.audit_events.labels(short_name(method), code.name).inc()
        # The admin actions' record (who did what to which car): the one INFO log with VINs.
        audit_log.info("%s", audit_line(method, caller, code, peer, audit_fields(method, request)),
                       extra={"event": "audit", "method": short_name(method), "code": code.name})

    def _denied(self, handler: Handler, method: str, decision: Decision) -> Handler:
        code, message = decision.code, decision.message
        assert code is not None
        audited = method in AUDITED

        async def refuse(context: grpc.aio.ServicerContext) -> None:
            if audited:  # the request is not parsed for a refused caller: no fields
                self._audit(method, decision.caller, code, context.peer(), None)
            await context.abort(code, message)

        # No request_deserializer: a refused caller's bytes are never parsed.
        if handler.response_streaming:

            async def refuse_stream(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await refuse(context)
                yield  # unreachable: makes this an async generator, as a stream handler is

            if handler.request_streaming:
                return cast(Handler, grpc.stream_stream_rpc_method_handler(refuse_stream))
            return cast(Handler, grpc.unary_stream_rpc_method_handler(refuse_stream))

        async def refuse_unary(_request: Any, context: grpc.aio.ServicerContext) -> None:
            await refuse(context)

        if handler.request_streaming:
            return cast(Handler, grpc.stream_unary_rpc_method_handler(refuse_unary))
        return cast(Handler, grpc.unary_unary_rpc_method_handler(refuse_unary))

    def _audited(self, handler: Handler, method: str, caller: str) -> Handler:
        # Every audited method is unary-unary (tests/unit/api/test_auth.py checks).
        inner = handler.unary_unary
        assert inner is not None

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)
                code = _status(context, grpc.StatusCode.OK)
                return response
            except BaseException:
                code = _status(context, grpc.StatusCode.CANCELLED)
                raise
            finally:
                self._audit(method, caller, code, context.peer(), request)

        return cast(Handler, grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        ))
