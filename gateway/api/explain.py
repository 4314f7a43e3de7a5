"""telematics.v1.ExplainService: why a car does not get what the customer paid for.

Vehicle-level decisions come from the pure rules (gateway/rules) over the current reference
snapshot; entitlement blockers come from the entitlement engine when one is wired.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import grpc

from gateway._gen.telematics.v1 import explain_pb2, explain_pb2_grpc
from gateway.api.errors import check_vin, invalid, not_found, unary
from gateway.metrics import Metrics
from gateway.model import VehicleSession
from gateway.reference.store import ReferenceStore
from gateway.rules import Outcome, explain, linking_advice, withholds_visited_country

log = logging.getLogger(__name__)

_OUTCOMES = {
    Outcome.ALLOW: explain_pb2.OUTCOME_ALLOW,
    Outcome.DENY: explain_pb2.OUTCOME_DENY,
    Outcome.DEFER: explain_pb2.OUTCOME_DEFER,
    Outcome.REDACT: explain_pb2.OUTCOME_REDACT,
}


class EntitlementExplainer(Protocol):
    def explain_entitlements(
        self, session: VehicleSession, lang: Literal["en", "de"]
    ) -> Sequence[explain_pb2.EntitlementExplanation]: ...


class ExplainService(explain_pb2_grpc.ExplainServiceServicer):
    def __init__(
        self,
        *,
        session_of: Callable[[str], Awaitable[VehicleSession | None]],
        reference: ReferenceStore,
        reference_root: Path,
        metrics: Metrics,
        entitlements: EntitlementExplainer | None = None,
    ) -> None:
        """
        session_of: the current session of a VIN (None: never seen): this gateway's memory,
        or the store with several gateways on one database (gateway/api/vehicle_reads.py).
        reference, reference_root: the data snapshot and where to reload it from.
        entitlements: explains pending entitlements; None until the engine is wired.
        """
        self._session_of = session_of
        self._reference = reference
        self._root = reference_root
        self._metrics = metrics
        self.entitlements = entitlements

    @unary("Explain")
    async def Explain(
        self, request: explain_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> explain_pb2.ExplainResponse:
        check_vin(request.vin)
        lang: Literal["en", "de"]
        if request.language in ("", "en"):
            lang = "en"
        elif request.language == "de":
            lang = "de"
        else:
            raise invalid(f"language must be 'en' or 'de', got {request.language!r}")
        session = await self._session_of(request.vin)
        if session is None:
            raise not_found(f"vehicle {request.vin} has never connected")
        ref = self._reference.current
        resp = explain_pb2.ExplainResponse(
            vin=session.vin,
            model=session.model,
            model_year=session.model_year,
            # R22: the visited country is a coarse location; not told while privacy covers all.
            visited_country=(
                "" if withholds_visited_country(session.privacy) else session.visited_country
            ),
        )
        for item in explain(ref, session, lang):
            d = item.decision
            resp.decisions.add(
                rule=d.rule,
                outcome=_OUTCOMES[d.outcome],
                reason=d.reason.value,
                service=d.service or "",
                detail=d.detail,
                next_step=item.next_step,
                support_contact=item.support_contact,
            )
        resp.advice.add(  # R5, R7: the question support hears most
            topic="account_linking", rules=["R5", "R7"], text=linking_advice(ref, session, lang)
        )
        home = ref.country(session.home_country)
        resp.support_contact = home.support_contact or ""
        if self.entitlements is not None:
            resp.entitlements.extend(self.entitlements.explain_entitlements(session, lang))
        return resp

    @unary("ReloadReferenceData")
    async def ReloadReferenceData(
        self, request: explain_pb2.ReloadReferenceDataRequest, context: grpc.aio.ServicerContext
    ) -> explain_pb2.ReloadReferenceDataResponse:
        ok, message = self._reference.reload(self._root)
        self._metrics.reference_reloads.labels("ok" if ok else "kept_old").inc()
        (log.info if ok else log.error)("reference data reload (gRPC): %s", message,
                                        extra={"event": "reference_reload", "trigger": "grpc", "ok": ok})
        return explain_pb2.ReloadReferenceDataResponse(reloaded=ok, message=message)
