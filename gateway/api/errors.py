"""Errors at the gRPC edge: handlers raise ``ApiError``; one wrapper checks every request
against its field limits (gateway/api/limits.py), turns ApiError into a status code, counts
every call by method and code, and keeps unexpected exceptions from leaking internals (they
become INTERNAL with a generic message and a log line). A database that cannot answer
(StoreError, LedgerError not translated by the handler) is UNAVAILABLE: the client retries."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import grpc

from gateway.api import limits
from gateway.entitlements.ledger import LedgerError
from gateway.going_away import GoingAway
from gateway.metrics import Metrics
from gateway.model import is_valid_vin
from gateway.store.base import StoreError

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Row = TypeVar("Row")
Resp = TypeVar("Resp")


class ApiError(Exception):
    def __init__(
        self, code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """trailing: metadata sent with the status (e.g. `retry-after-s` of an R7 lockout)."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing = trailing


def check_vin(vin: str, field: str = "vin") -> None:
    if not is_valid_vin(vin):
        # Echo only what fits a VIN: an oversized value is never copied into the answer.
        shown = f" {vin!r}" if len(vin) <= limits.MAX_VIN_CHARS else ""
        raise invalid(f"{field}{shown} is not 17 characters of A-Z/0-9 without I, O, Q")


def check_limits(request: object) -> None:
    """Every field of `request` within its documented limit (gateway/api/limits.py)."""
    try:
        limits.check(request)
    except limits.LimitExceeded as exc:
        raise invalid(exc.message) from None


def check_retained(after: int, first: int) -> None:
    """OUT_OF_RANGE when events right after `after` were pruned (`first`: the oldest retained
    cursor, 0 when the log is empty). 0 means "from the oldest retained" and is always fine;
    so is a cursor beyond the newest event (the stream waits for the next one)."""
    if after and first and after + 1 < first:
        raise ApiError(
            grpc.StatusCode.OUT_OF_RANGE,
            f"after_cursor {after} was pruned; the oldest retained event is {first}. Resume with"
            f" after_cursor 0 (or {first - 1}) to read from the oldest retained event; events"
            f" {after + 1}..{first - 1} are no longer available",
        )


def without_gaps(
    read: Callable[[int], Awaitable[Sequence[Row]]], first_cursor: Callable[[], Awaitable[int]]
) -> Callable[[int], Awaitable[Sequence[Row]]]:
    """`read` of a pruned log (for EventHub.follow) that answers OUT_OF_RANGE rather than rows
    with a gap. Checked after each read: the oldest retained cursor only grows, so when nothing
    after `after` is pruned by then, the read saw every row (no race with the pruning)."""

    async def checked(after: int) -> Sequence[Row]:
        rows = await read(after)
        check_retained(after, await first_cursor())
        return rows

    return checked


def unavailable(method: str) -> ApiError:
    """The database did not answer: the call changed nothing it reports, the client retries.
    The message names no database (its URL is for the operator's log, not the caller)."""
    return ApiError(grpc.StatusCode.UNAVAILABLE, f"{method}: the database is unavailable; retry later")


def invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, message)


class Observed(Protocol):
    """A servicer whose calls are counted: it exposes the gateway's metrics."""

    _metrics: Metrics


S = TypeVar("S", bound=Observed)


def unary(
    method: str,
) -> Callable[
    [Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]]],
    Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
]:
    """Map ApiError to its status code and count the call by method and code."""

    def wrap(
        fn: Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
    ) -> Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
        @functools.wraps(fn)
        async def handler(self: S, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            code = grpc.StatusCode.OK
            try:
                check_limits(request)
                return await fn(self, request, context)
            except ApiError as exc:
                code = exc.code
                await context.abort(exc.code, exc.message, exc.trailing)
                raise  # unreachable: abort raises
            except (StoreError, LedgerError):
                # Not logged per call (an outage would flood the log): the availability
                # monitor logs the outage once (gateway/store/availability.py).
                code = grpc.StatusCode.UNAVAILABLE
                await context.abort(code, unavailable(method).message)
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", method)
                await context.abort(code, f"{method}: internal error")
                raise
            finally:
                self._metrics.grpc_requests.labels(method, code.name).inc()

        return handler

    return wrap


def stream(
    method: str,
) -> Callable[
    [Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]],
    Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
]:
    """As ``unary`` for server streams; also tracks open streams in a gauge. A stream the
    gateway ends at shutdown (GoingAway) ends with UNAVAILABLE."""

    def wrap(
        fn: Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
    ) -> Callable[[S, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
        @functools.wraps(fn)
        async def handler(
            self: S, request: Req, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Resp]:
            code = grpc.StatusCode.OK
            gauge = self._metrics.grpc_stream_subscribers.labels(method)
            gauge.inc()
            try:
                check_limits(request)
                async for item in fn(self, request, context):
                    yield item
            except ApiError as exc:
                code = exc.code
                await context.abort(exc.code, exc.message)
            except GoingAway as exc:  # shutdown: not "finished", the client resumes elsewhere
                code = grpc.StatusCode.UNAVAILABLE
                await context.abort(code, str(exc))
            except (StoreError, LedgerError):
                # Not logged per call (an outage would flood the log): the availability
                # monitor logs the outage once (gateway/store/availability.py).
                code = grpc.StatusCode.UNAVAILABLE
                await context.abort(code, unavailable(method).message)
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("%s failed", method)
                await context.abort(code, f"{method}: internal error")
            except BaseException:  # the client went away (cancelled) or the server stops
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                gauge.dec()
                self._metrics.grpc_requests.labels(method, code.name).inc()

        return handler

    return wrap
