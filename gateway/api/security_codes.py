"""telematics.v1.SecurityCodeService and the R7 check of SendRemoteCommand.

No answer, error or log line carries a code, and no error names the account (an e-mail address,
R1): the caller knows which account it asked about.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import grpc

from gateway._gen.telematics.v1 import security_codes_pb2 as pb
from gateway._gen.telematics.v1 import security_codes_pb2_grpc
from gateway.api.errors import ApiError, invalid, not_found, unary
from gateway.clock import Clock
from gateway.entitlements.ledger import LedgerError
from gateway.metrics import Metrics
from gateway.rules.decision import Decision
from gateway.security.code_store import CheckResult, CodeAlreadySet, NoVehicle, SecurityCodes
from gateway.security.codes import Attempt, LockoutPolicy, check_format

__all__ = ["SecurityCodeGate", "SecurityCodeService"]

RETRY_AFTER_KEY = "retry-after-s"  # trailing metadata of RESOURCE_EXHAUSTED: whole seconds


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """The codes and the owners live in the ledger's database: when it fails, UNAVAILABLE (retry),
    as for every entitlement RPC, never INTERNAL."""
    try:
        yield
    except LedgerError as exc:
        raise ApiError(grpc.StatusCode.UNAVAILABLE, "the security-code store is unavailable") from exc


def _code_format(code: str, field: str) -> None:
    problem = check_format(code)
    if problem is not None:
        raise invalid(f"{field}: {problem}")


def _until(retry_at: float, now: float) -> tuple[str, int, tuple[tuple[str, str], ...]]:
    """When a lockout ends: as UTC text, in whole seconds from now, and as trailing metadata."""
    wait = max(1, math.ceil(retry_at - now))
    return (datetime.fromtimestamp(retry_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), wait,
            ((RETRY_AFTER_KEY, str(wait)),))


def _locked(result: CheckResult, now: float) -> ApiError:
    until, wait, trailing = _until(result.retry_at, now)
    return ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"R7: too many wrong security codes; the account is locked until {until} (retry in {wait} s)",
        trailing,
    )


class _Checks:
    """Turns a code check into an answer and counts it (bounded label: Attempt)."""

    def __init__(self, *, metrics: Metrics, clock: Clock, policy: LockoutPolicy) -> None:
        self._metrics = metrics
        self._clock = clock
        self._policy = policy

    def count(self, attempt: Attempt) -> None:
        self._metrics.security_code_checks.labels(attempt.value).inc()

    def refusal(self, result: CheckResult) -> ApiError | None:
        """None for OK; else the error to answer (counted here)."""
        self.count(result.attempt)
        match result.attempt:
            case Attempt.OK:
                return None
            case Attempt.LOCKED:
                return _locked(result, self._clock.now())
            case Attempt.WRONG if result.retry_at:
                # The wrong code that starts the lockout: its answer carries the retry time too.
                until, wait, trailing = _until(result.retry_at, self._clock.now())
                return ApiError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"R7: wrong security code; the account is now locked until {until} (retry in {wait} s)",
                    trailing,
                )
            case Attempt.WRONG:
                left = self._policy.max_failures - result.failures
                tail = f"{left} more wrong {'code locks' if left == 1 else 'codes lock'} the account"
                return ApiError(grpc.StatusCode.PERMISSION_DENIED, f"R7: wrong security code; {tail}")
            case Attempt.MISSING:
                raise AssertionError("a missing code is answered before any check (SecurityCodeGate)")
            case Attempt.NOT_SET:
                return ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "R7: the owner's account has no security code; set one with SetSecurityCode",
                )


class SecurityCodeGate:
    """R7 at SendRemoteCommand: where the rule asks for the code, the owner's code must be given
    and right. Missing: FAILED_PRECONDITION (nothing to count: no guess was made). Wrong:
    PERMISSION_DENIED, counted. Locked: RESOURCE_EXHAUSTED with the retry time."""

    def __init__(
        self,
        *,
        codes: SecurityCodes,
        owner_of: Callable[[str], Awaitable[str | None]],
        metrics: Metrics,
        clock: Clock,
        policy: LockoutPolicy,
    ) -> None:
        """owner_of: the account owning a VIN (the ledger's vehicle owners, R3)."""
        self._codes = codes
        self._owner_of = owner_of
        self._checks = _Checks(metrics=metrics, clock=clock, policy=policy)

    async def require(self, decision: Decision, vin: str, code: str) -> None:
        if decision.allowed:
            return  # no code needed: a code that is given anyway is not checked (or counted)
        if not code:
            self._checks.count(Attempt.MISSING)
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"R7: security code required ({decision.detail}); give the owner's code in"
                " security_code",
            )
        _code_format(code, "security_code")
        with _store_errors():
            await self._check(vin, code)

    async def _check(self, vin: str, code: str) -> None:
        owner = await self._owner_of(vin)
        if owner is None:
            self._checks.count(Attempt.NOT_SET)
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "R7: security code required, but the vehicle has no owner account"
                " (SetVehicleOwner)",
            )
        refusal = self._checks.refusal(await self._codes.check(owner, code))
        if refusal is not None:
            raise refusal


class SecurityCodeService(security_codes_pb2_grpc.SecurityCodeServiceServicer):
    def __init__(
        self,
        *,
        codes: SecurityCodes,
        owned_vins: Callable[[str], Awaitable[list[str]]],
        metrics: Metrics,
        clock: Clock,
        policy: LockoutPolicy,
    ) -> None:
        """owned_vins: the vehicles an account owns (the ledger); a code needs an account."""
        self._codes = codes
        self._owned_vins = owned_vins
        self._metrics = metrics
        self._checks = _Checks(metrics=metrics, clock=clock, policy=policy)

    @unary("SetSecurityCode")
    async def SetSecurityCode(
        self, request: pb.SetSecurityCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetSecurityCodeResponse:
        if not request.account:
            raise invalid("account must not be empty")
        _code_format(request.new_code, "new_code")
        if request.old_code:
            _code_format(request.old_code, "old_code")
        with _store_errors():
            owns = bool(await self._owned_vins(request.account))
        if not owns:
            raise not_found("the account owns no vehicle (SetVehicleOwner)")
        try:
            with _store_errors():
                result = await self._codes.set_code(request.account, request.new_code, request.old_code)
        except NoVehicle:  # DeleteAccount (R4) came between the check above and the write
            raise not_found("the account owns no vehicle (SetVehicleOwner)") from None
        except CodeAlreadySet:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "R7: a security code is set; give it in old_code to change it, or reset it"
                " (ResetSecurityCode)",
            ) from None
        if result.changed:
            refusal = self._checks.refusal(result.check)
            if refusal is not None:
                raise refusal
        self._metrics.security_code_changes.labels("changed" if result.changed else "set").inc()
        return pb.SetSecurityCodeResponse(changed=result.changed)

    @unary("ResetSecurityCode")
    async def ResetSecurityCode(
        self, request: pb.ResetSecurityCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetSecurityCodeResponse:
        if not request.account:
            raise invalid("account must not be empty")
        with _store_errors():
            had = await self._codes.reset(request.account)
        self._metrics.security_code_changes.labels("reset").inc()
        return pb.ResetSecurityCodeResponse(had_code=had)
