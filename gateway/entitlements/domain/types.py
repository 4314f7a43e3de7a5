"""Plain entitlement types: kinds, states, the entitlement record, grant requests, errors.

An entitlement is one order line for one vehicle: a Connect service delivered in the vehicle's
entitlement set (R13), or a Function on Demand unlocked in the car (R14-R18).

Kinds and how they are delivered and ended:

| kind          | delivered by                       | term                          | rule     |
|---------------|------------------------------------|-------------------------------|----------|
| SERVICE       | entitlement set, after a boot (R13)| none, or `term_end` (R9 incl.)| R10, R13 |
| FIXED_TERM    | entitlement set, after a boot (R13)| `term_end` or months, renews  | R10, R13 |
| FOD_UNLIMITED | unlock command in an R17 window    | none; 14-day withdrawal       | R14, R15 |
| FOD_MONTHLY   | unlock command in an R17 window    | month by month until cancelled| R14, R16 |

States (the full table with every trigger is in `lifecycle.py`):

    service:  PENDING -> DELIVERY_DUE -> DELIVERED -> ACTIVE
    FoD:      PENDING -> UNLOCK_PENDING -> UNLOCKED          (FAILED <-> UNLOCK_PENDING retries)
    ending:   any live state -> REVOKE_PENDING -> REVOKED    (or straight to REVOKED when nothing
                                                              can have reached the car)

All times are unix seconds (UTC) as floats.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias


class EntitlementKind(enum.StrEnum):
    SERVICE = "service"
    FIXED_TERM = "fixed_term"
    FOD_UNLIMITED = "fod_unlimited"
    FOD_MONTHLY = "fod_monthly"

    @property
    def is_fod(self) -> bool:
        """True for Functions on Demand: unlocked in the car, billed on unlock (R14)."""
        return self in (EntitlementKind.FOD_UNLIMITED, EntitlementKind.FOD_MONTHLY)


class EntitlementState(enum.StrEnum):
    PENDING = "pending"  # granted; nothing sent to the car yet
    DELIVERY_DUE = "delivery_due"  # service: the car booted online, a set with it must go out
    DELIVERED = "delivered"  # service: a set with it was published, waiting for the ack
    ACTIVE = "active"  # service: the car acked a set with it (R13)
    UNLOCK_PENDING = "unlock_pending"  # FoD: unlock command sent in an R17 window
    UNLOCKED = "unlocked"  # FoD: the car confirmed the unlock (billed, R14)
    FAILED = "failed"  # FoD: the last unlock attempt failed; retry in the next window (R18)
    REVOKE_PENDING = "revoke_pending"  # the term is over; the car must drop it (R10)
    REVOKED = "revoked"  # final: not in the car any more (or never was)

    @property
    def is_ending(self) -> bool:
        """True once the entitlement's end has been decided (nothing can extend it again)."""
        return self in (EntitlementState.REVOKE_PENDING, EntitlementState.REVOKED)


class PurchaserRole(enum.StrEnum):
    OWNER = "owner"
    SECONDARY_USER = "secondary_user"


class FodAction(enum.StrEnum):
    """The two commands an FoD runs in the car under R17 conditions."""

    UNLOCK = "unlock"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """An order as the store sends it. The order id is the idempotency key.

    Give at most one of `term_end` and `term_months`; `term_start` defaults to `booked_at`.
    """

    order_id: str
    vin: str
    product_id: str  # service id or function id
    kind: EntitlementKind
    purchaser: str  # account id, the person's e-mail address (R1)
    purchaser_role: PurchaserRole
    booked_at: float  # when the order was placed: the R15 withdrawal period counts from here
    term_start: float | None = None
    term_end: float | None = None
    term_months: int | None = None
    auto_renew: bool = False


@dataclass(frozen=True, slots=True)
class Entitlement:
    """One granted order for one VIN. Immutable: every change is a new value (lifecycle.py).

    The order content (`request`) never changes, so the VIN cannot either (R8); the flat
    properties below read through to it.

    Term fields: `term_start` is the start of the first term and stays put; `term_end` is the
    end of the current term (moved by each auto-renewal, R10); `renewals` counts them.
    `effective_end` is set once the end is decided (cancel, withdrawal, revoke, term end).
    """

    entitlement_id: str
    request: GrantRequest
    granted_at: float
    state: EntitlementState
    term_start: float
    term_end: float | None  # None: no term (unlimited, or month by month until cancelled)
    auto_renew: bool
    renewals: int = 0
    cancel_requested_at: float | None = None
    effective_end: float | None = None
    end_reason: str = ""
    failures: int = 0  # consecutive failed car attempts in the current phase (unlock or cancel)
    last_failure_at: float | None = None
    unlocked_at: float | None = None  # FoD: first time the car confirmed the unlock
    billed_at: float | None = None  # FoD: when BILLABLE was emitted; set at most once (R14)
    ended_at: float | None = None  # when it reached REVOKED
    updated_at: float = 0.0

    @property
    def vin(self) -> str:
        return self.request.vin

    @property
    def product_id(self) -> str:
        return self.request.product_id

    @property
    def kind(self) -> EntitlementKind:
        return self.request.kind

    @property
    def order_id(self) -> str:
        return self.request.order_id

    @property
    def purchaser(self) -> str:
        return self.request.purchaser

    @property
    def purchaser_role(self) -> PurchaserRole:
        return self.request.purchaser_role

    @property
    def booked_at(self) -> float:
        return self.request.booked_at

    @property
    def term_months(self) -> int | None:
        return self.request.term_months


class LifecycleEventKind(enum.StrEnum):
    GRANTED = "granted"
    DELIVERY_DUE = "delivery_due"  # publish an entitlement set that includes it (R13)
    DELIVERED = "delivered"
    ACTIVE = "active"
    UNLOCK_DUE = "unlock_due"  # send the FoD unlock command now (R17 window open)
    UNLOCKED = "unlocked"
    BILLABLE = "billable"  # at most once per entitlement, on the first confirmed unlock (R14)
    FAILED = "failed"
    CANCELLED = "cancelled"  # cancel accepted; `effective_end` says when it ends (R10, R16)
    WITHDRAWN = "withdrawn"  # R15 withdrawal accepted: free, ends now
    RENEWED = "renewed"  # one auto-renewal (R10); `effective_end` is the new term end
    REVOKE_DUE = "revoke_due"  # the car must drop it: a new set (service) or a cancel (FoD)
    CANCEL_DUE = "cancel_due"  # send the FoD cancel command now (R17 window open)
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """What a transition tells the rest of the gateway (outbox, downlink, billing)."""

    kind: LifecycleEventKind
    entitlement_id: str
    vin: str
    product_id: str
    at: float
    reason: str = ""
    effective_end: float | None = None


# -- triggers: the inputs of lifecycle.transition ------------------------------------------


@dataclass(frozen=True, slots=True)
class BootWhileOnline:
    """The vehicle booted and is online (R13: services appear after the next such boot)."""


@dataclass(frozen=True, slots=True)
class Delivered:
    """An entitlement set including this service was published to the vehicle."""


@dataclass(frozen=True, slots=True)
class Acked:
    """The vehicle acked a set that includes this service (or, when revoking, excludes it)."""


@dataclass(frozen=True, slots=True)
class FodWindowOpen:
    """R17 preconditions and the idle wait are met: the FoD command can be sent now."""


@dataclass(frozen=True, slots=True)
class FodResult:
    """The vehicle's answer to an FoD command."""

    action: FodAction
    success: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    """The customer cancels (R10, R16) or withdraws (R15)."""

    notice_s: float = 0.0  # R10 notice period of the service's contract


@dataclass(frozen=True, slots=True)
class Revoke:
    """The backend ends it now whatever the terms (e.g. account deleted, R4)."""

    reason: str


@dataclass(frozen=True, slots=True)
class TermEnded:
    """`terms.next_term_check_at` has come: renew or end."""


Trigger: TypeAlias = (
    BootWhileOnline | Delivered | Acked | FodWindowOpen | FodResult | Cancel | Revoke | TermEnded
)


class EntitlementError(Exception):
    """Base of the domain errors; `reason` is machine-readable, `message` is for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class InvalidGrant(EntitlementError):
    """The order is malformed (bad VIN, contradictory term fields)."""


class PermissionRefused(EntitlementError):
    """The purchaser may not buy for this vehicle (R3), or a VIN does not match (R8)."""


class OrderConflict(EntitlementError):
    """The order id is known with different content (grants are idempotent by order id)."""


class CancelRefused(EntitlementError):
    """The terms do not allow a cancellation now (R15 withdrawal period over)."""


class TransitionError(EntitlementError):
    """The trigger is not legal in the entitlement's state."""
