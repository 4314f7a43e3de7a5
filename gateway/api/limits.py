"""Bounds of every request field of every RPC, defined once and checked in one place.

`check(request)` runs before every handler (gateway/api/errors.py `unary`/`stream`), so no
handler, store or car ever sees an unbounded string, list or number from a backend. The
proto comments document the same limits (a test checks that every request field has one).

Errors are INVALID_ARGUMENT naming the field and its limit; they never echo the value (it may
be huge, or personal: account ids are e-mail addresses, R1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message

# -- the limits (documented in proto/telematics/v1/*.proto and the README) ---------------------

MAX_VIN_CHARS = 17  # a VIN is exactly 17 characters; longer is rejected before the syntax check
MAX_ID_CHARS = 128  # order ids (the backend's), entitlement ids (ours: UUIDs, 36)
MAX_PRODUCT_ID_CHARS = 64  # service or function ids of the catalogue
MAX_ACCOUNT_CHARS = 254  # account ids are e-mail addresses (R1); RFC 5321 caps a path at 254
MAX_REASON_CHARS = 256  # free text stored with the entitlement and sent in its events
MAX_PAGE_TOKEN_CHARS = 64  # tokens this service issues are 24 characters
MAX_LANGUAGE_CHARS = 8  # "en" or "de"; checked further by the handler
MAX_COMMAND_NAME_CHARS = 64  # "lock", "flash-lights", ...: published to the car as is
MAX_COMMAND_ARGUMENTS = 16
MAX_ARGUMENT_KEY_CHARS = 64
MAX_ARGUMENT_VALUE_CHARS = 256
MAX_SECURITY_CODE_CHARS = 8  # R7: 4..8 digits (gateway/security/codes.py checks the format)
MAX_SERVICES = 64  # service filter of SubscribeTelemetry
MAX_SERVICE_ID_CHARS = 64
MAX_PAGE_SIZE = 1000
MAX_TERM_MONTHS = 1200  # 100 years; keeps every term end inside the calendar
MAX_NOTICE_SECONDS = 10 * 366 * 86_400  # 10 years of notice (R10)
# Timestamps of a request: 1970-01-01T00:00:00Z .. 2199-12-31T23:59:59Z. The upper bound keeps
# a term end (start + MAX_TERM_MONTHS) far inside what the calendar code can represent.
MIN_TIMESTAMP_S = 0
MAX_TIMESTAMP_S = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp()) - 1
# gRPC refuses a larger request with RESOURCE_EXHAUSTED before any handler runs. The largest
# valid request (a remote command with every argument at its limit) is about 22 KiB.
MAX_REQUEST_BYTES = 64 * 1024
# Cursors (uint64) have no limit: SQLite numbers events below 2^63, and a larger after_cursor
# means "beyond the newest event" like any other (gateway/store/sqlite_thread.py `cursor_arg`).


class LimitExceeded(Exception):
    """A request field is outside its documented limit; `message` names the field and limit
    (INVALID_ARGUMENT at the edge: gateway/api/errors.py check_limits)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- kinds of limit ----------------------------------------------------------------------------


def _too_many(name: str, limit: int, got: int) -> LimitExceeded:
    return LimitExceeded(f"{name} has too many entries: the limit is {limit}, got {got}")


@dataclass(frozen=True, slots=True)
class Text:
    max_chars: int

    def check(self, name: str, value: Any) -> None:
        if len(value) > self.max_chars:
            limit = f"the limit is {self.max_chars} characters"
            raise LimitExceeded(f"{name} is too long: {limit}, got {len(value)}")


@dataclass(frozen=True, slots=True)
class Texts:
    """A repeated string field."""

    max_items: int
    item: Text

    def check(self, name: str, value: Any) -> None:
        if len(value) > self.max_items:
            raise _too_many(name, self.max_items, len(value))
        for i, item in enumerate(value):
            self.item.check(f"{name}[{i}]", item)


@dataclass(frozen=True, slots=True)
class TextMap:
    """A map<string, string> field."""

    max_entries: int
    key: Text
    value: Text

    def check(self, name: str, value: Any) -> None:
        if len(value) > self.max_entries:
            raise _too_many(name, self.max_entries, len(value))
        for i, (k, v) in enumerate(sorted(value.items())):
            # Name the entry by position: the key itself may be the oversized value.
            self.key.check(f"{name} key #{i + 1}", k)
            self.value.check(f"{name} value #{i + 1}", v)


@dataclass(frozen=True, slots=True)
class Number:
    lo: int
    hi: int
    note: str = ""

    def check(self, name: str, value: Any) -> None:
        if not self.lo <= value <= self.hi:
            note = f" ({self.note})" if self.note else ""
            limit = f"the limit is {self.lo}..{self.hi}{note}"
            raise LimitExceeded(f"{name} is out of range: {limit}, got {value}")


@dataclass(frozen=True, slots=True)
class Time:
    """A google.protobuf.Timestamp field; unset is always allowed."""

    def check(self, name: str, value: Any) -> None:
        if not MIN_TIMESTAMP_S <= value.seconds <= MAX_TIMESTAMP_S or not 0 <= value.nanos <= 999_999_999:
            raise LimitExceeded(
                f"{name} is out of range: the limit is 1970-01-01T00:00:00Z..2199-12-31T23:59:59Z"
                " (nanos 0..999999999)"
            )


@dataclass(frozen=True, slots=True)
class Any64:
    """A number with no limit of its own (a cursor: any uint64 is meaningful)."""

    def check(self, name: str, value: Any) -> None:
        return None


Limit = Text | Texts | TextMap | Number | Time | Any64

VIN = Text(MAX_VIN_CHARS)
ID = Text(MAX_ID_CHARS)
ACCOUNT = Text(MAX_ACCOUNT_CHARS)
CURSOR = Any64()
ENUM = Number(-(2**31), 2**31 - 1, "an enum value; unknown values are refused by the handler")
FLAG = Any64()  # bool
SECURITY_CODE = Text(MAX_SECURITY_CODE_CHARS)

_P = "telematics.v1."

# Every field of every request message; a test checks that none is missing.
FIELDS: Mapping[str, Mapping[str, Limit]] = {
    # VehicleService
    _P + "GetVehicleRequest": {"vin": VIN},
    _P + "ListVehiclesRequest": {
        "page_size": Number(0, MAX_PAGE_SIZE, "0: the default, 100"),
        "page_token": Text(MAX_PAGE_TOKEN_CHARS),
    },
    _P + "WatchVehicleEventsRequest": {"after_cursor": CURSOR, "vin": VIN},
    _P + "SendRemoteCommandRequest": {
        "vin": VIN,
        "name": Text(MAX_COMMAND_NAME_CHARS),
        "arguments": TextMap(
            MAX_COMMAND_ARGUMENTS, Text(MAX_ARGUMENT_KEY_CHARS), Text(MAX_ARGUMENT_VALUE_CHARS)
        ),
        "security_code": SECURITY_CODE,
    },
    # TelemetryService
    _P + "SubscribeTelemetryRequest": {
        "services": Texts(MAX_SERVICES, Text(MAX_SERVICE_ID_CHARS)), "after_cursor": CURSOR,
    },
    # ExplainService
    _P + "ExplainRequest": {"vin": VIN, "language": Text(MAX_LANGUAGE_CHARS)},
    _P + "ReloadReferenceDataRequest": {},
    # EntitlementService
    _P + "GrantRequest": {
        "order_id": ID,
        "vin": VIN,
        "product_id": Text(MAX_PRODUCT_ID_CHARS),
        "kind": ENUM,
        "purchaser": ACCOUNT,
        "purchaser_role": ENUM,
        "booked_at": Time(),
        "term_start": Time(),
        "term_end": Time(),
        "term_months": Number(0, MAX_TERM_MONTHS, "0: none"),
        "auto_renew": FLAG,
    },
    _P + "CancelRequest": {"entitlement_id": ID, "notice_seconds": Number(0, MAX_NOTICE_SECONDS)},
    _P + "RevokeRequest": {"entitlement_id": ID, "reason": Text(MAX_REASON_CHARS)},
    _P + "GetEntitlementRequest": {"entitlement_id": ID},
    _P + "ListEntitlementsRequest": {"vin": VIN, "include_ended": FLAG},
    _P + "SetVehicleOwnerRequest": {"vin": VIN, "owner": ACCOUNT},
    _P + "DeleteAccountRequest": {"account": ACCOUNT},
    _P + "WatchEntitlementEventsRequest": {"after_cursor": CURSOR, "vin": VIN},
    # SecurityCodeService (R7)
    _P + "SetSecurityCodeRequest": {
        "account": ACCOUNT,
        "new_code": SECURITY_CODE,
        "old_code": SECURITY_CODE,
    },
    _P + "ResetSecurityCodeRequest": {"account": ACCOUNT},
}


def check(request: object) -> None:
    """Raise LimitExceeded for the first field of `request` outside its limit. A message type
    without an entry (not one of ours) passes."""
    if not isinstance(request, Message):
        return
    limits = FIELDS.get(request.DESCRIPTOR.full_name, {})
    for name, limit in limits.items():
        if isinstance(limit, Time) and not request.HasField(name):
            continue
        limit.check(name, getattr(request, name))
