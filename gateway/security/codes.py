"""R7: the security code of an account, as values: its format, its hash, and the lockout.

Pure (no I/O, no clock of its own): gateway/security/code_store.py keeps the records in
SQLite and serialises the attempts of one account.

Hashing: scrypt from the standard library (hashlib.scrypt, OpenSSL underneath), so no new
dependency. Parameters n=2**14, r=8, p=1 (RFC 7914's interactive setting, the OWASP minimum;
16 MiB and ~50 ms per hash here), a 16-byte random salt per code and a 32-byte key. The
parameters are stored with each hash ("scrypt$n$r$p$salt$key"), so they can be raised later
without invalidating the codes already set. A 4..8 digit code has at most 10^8 values: the
slow hash only slows an offline attack on a stolen database; the lockout is what protects the
online check. Keys are compared with hmac.compare_digest (constant time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "CODE_MAX_DIGITS",
    "CODE_MIN_DIGITS",
    "Attempt",
    "CodeRecord",
    "LockoutPolicy",
    "check_format",
    "hash_code",
    "verify_code",
]

# As in the car maker's apps: a PIN of 4 to 8 digits (ASCII only: "١٢٣٤" is not a code).
CODE_MIN_DIGITS = 4
CODE_MAX_DIGITS = 8
_CODE = re.compile(rf"[0-9]{{{CODE_MIN_DIGITS},{CODE_MAX_DIGITS}}}")

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
_MAXMEM = 64 * 1024 * 1024  # above 128 * n * r * p = 16 MiB, below anything a stored row may ask


def check_format(code: str) -> str | None:
    """None when `code` is a well-formed security code, else why not (never the code itself)."""
    if _CODE.fullmatch(code) is None:
        return f"a security code is {CODE_MIN_DIGITS} to {CODE_MAX_DIGITS} digits 0-9"
    return None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def hash_code(code: str, *, salt: bytes | None = None) -> str:
    """The stored form of a code: a fresh random salt each time (two accounts with the same
    code have different hashes). Slow on purpose: call it off the event loop."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.scrypt(
        code.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES, maxmem=_MAXMEM
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_code(code: str, stored: str) -> bool:
    """Does `code` match the stored hash? Constant-time comparison of the derived keys. A stored
    value that is not a hash this module wrote never matches."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(key)
        derived = hashlib.scrypt(
            code.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected), maxmem=_MAXMEM,
        )
    except ValueError:
        return False
    return hmac.compare_digest(derived, expected)


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """`max_failures` wrong codes in a row lock the account for `lockout_s` seconds."""

    max_failures: int = 5
    lockout_s: float = 900.0


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """What is kept per account. `failures`: wrong codes since the last right one (or since the
    last lockout ended). `locked_until`: unix seconds; 0 when not locked."""

    code_hash: str | None = None
    failures: int = 0
    locked_until: float = 0.0

    def locked_at(self, now: float) -> bool:
        return self.locked_until > now

    def settled(self, now: float) -> CodeRecord:
        """The record as of `now`: a lockout that has run out is over and its count starts
        again from zero (the next wrong code is the first of a new series)."""
        if self.locked_until and not self.locked_at(now):
            return replace(self, failures=0, locked_until=0.0)
        return self

    def after_wrong(self, now: float, policy: LockoutPolicy) -> CodeRecord:
        failures = self.failures + 1
        if failures >= policy.max_failures:
            return replace(self, failures=failures, locked_until=now + policy.lockout_s)
        return replace(self, failures=failures)

    def after_right(self) -> CodeRecord:
        return replace(self, failures=0, locked_until=0.0)


class Attempt(StrEnum):
    """The result of checking a code; the values are the metric's `result` labels."""

    OK = "ok"
    WRONG = "wrong"  # PERMISSION_DENIED, counted towards the lockout
    LOCKED = "locked"  # RESOURCE_EXHAUSTED until the lockout ends, whatever the code
    MISSING = "missing"  # required but not given: FAILED_PRECONDITION, not counted
    NOT_SET = "not_set"  # the owner's account has no code (or the car has no owner)
