"""Backend credentials: bearer tokens with scopes, stored only as salted hashes.

A token is ``<id>.<secret>``: the id names the credential (it is logged and audited), the
secret is 32 random bytes (base64url, 43 characters) and is shown exactly once, when the
credential is created. The gateway keeps only ``hmac-sha256$<salt>$<digest>`` per credential,
``digest = HMAC-SHA256(key=salt, msg=secret)`` with a 16-byte random salt per credential, and
compares digests with ``hmac.compare_digest`` (constant time).

Why a fast keyed hash and not scrypt: a slow hash protects guessable secrets (passwords, the
R7 code) against brute force after the hashes leak. These secrets are 256 random bits: no
dictionary, and 2^256 guesses is out of reach however fast each guess is. Every gRPC call is
authenticated, so a ~20 ms scrypt per call would cap a backend at ~50 calls per second per
core and hand anyone with the port an easy CPU exhaustion; HMAC-SHA256 costs a microsecond.
The per-credential salt keeps two credentials with the same secret (never in practice)
distinct and a precomputed table useless.

Sources: the credentials file (TOML, ``[[credential]]`` tables with ``id``, ``scopes`` and
``hash``; default ``data_dir/credentials/credentials.toml``) and the ``grpc_credentials``
configuration key (environment ``GATEWAY_GRPC_CREDENTIALS``: ``id=scope,scope=hash`` entries
separated by ``;``) for deployments that inject secrets through the environment. Neither ever
holds a secret, only its hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.security.files import write_private

# The scopes a credential can hold. `admin` implies every other scope.
SCOPES = (
    "vehicles:read",
    "telemetry:read",
    "events:read",
    "entitlements:read",
    "entitlements:write",
    "commands:send",
    "security_codes:write",  # R7: set or change an account's security code
    "admin",
)
ADMIN = "admin"

CREDENTIALS_DIR = "credentials"
CREDENTIALS_FILE = "credentials.toml"
ADMIN_TOKEN_FILE = "admin.token"
ADMIN_ID = "admin"

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, base64url without padding
_HASH = re.compile(r"^hmac-sha256\$([0-9a-f]{32})\$([0-9a-f]{64})$")
_SALT_BYTES = 16


class CredentialError(Exception):
    """A credentials file or entry is malformed. The message never holds a hash or a secret."""


@dataclass(frozen=True, slots=True)
class Credential:
    id: str
    scopes: frozenset[str]
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes

    def stored_hash(self) -> str:
        return f"hmac-sha256${self.salt.hex()}${self.digest.hex()}"

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(_digest(self.salt, secret), self.digest)


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("utf-8"), hashlib.sha256).digest()


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """The stored form of `secret`: ``hmac-sha256$<salt hex>$<digest hex>``."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    return f"hmac-sha256${salt.hex()}${_digest(salt, secret).hex()}"


def new_token(credential_id: str) -> tuple[str, str]:
    """(token to hand out once, hash to store) for a new credential `credential_id`."""
    check_id(credential_id)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return f"{credential_id}.{secret}", hash_secret(secret)


def check_id(credential_id: str) -> None:
    if not _ID.match(credential_id):
        raise CredentialError(
            "a credential id is 1..64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(scopes)
    unknown = sorted(chosen - set(SCOPES))
    if unknown:
        # Scope names are not secret: show them, with the list to choose from.
        raise CredentialError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not chosen:
        raise CredentialError("a credential needs at least one scope")
    return chosen


def make_credential(credential_id: str, scopes: Iterable[str], stored_hash: str) -> Credential:
    check_id(credential_id)
    match = _HASH.match(stored_hash)
    if match is None:
        raise CredentialError(f"credential {credential_id!r}: hash is not hmac-sha256$<32 hex>$<64 hex>")
    return Credential(
        id=credential_id,
        scopes=check_scopes(scopes),
        salt=bytes.fromhex(match.group(1)),
        digest=bytes.fromhex(match.group(2)),
    )


def split_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token; None otherwise (the caller answers UNAUTHENTICATED)."""
    credential_id, dot, secret = token.partition(".")
    if not dot or not _ID.match(credential_id) or not _SECRET.match(secret):
        return None
    return credential_id, secret


class CredentialStore:
    """The credentials the gateway accepts, by id."""

    def __init__(self, credentials: Iterable[Credential] = ()) -> None:
        self._by_id: dict[str, Credential] = {}
        for credential in credentials:
            if credential.id in self._by_id:
                raise CredentialError(f"credential {credential.id!r} is defined twice")
            self._by_id[credential.id] = credential

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Credential]:
        return iter(self._by_id.values())

    def __contains__(self, credential_id: object) -> bool:
        return credential_id in self._by_id

    def verify(self, token: str) -> Credential | None:
        """The credential `token` proves, or None (malformed, unknown id, or wrong secret)."""
        parts = split_token(token)
        if parts is None:
            return None
        credential = self._by_id.get(parts[0])
        if credential is None:
            return None
        return credential if credential.matches(parts[1]) else None

    @staticmethod
    def merged(*stores: CredentialStore) -> CredentialStore:
        return CredentialStore(c for store in stores for c in store)


def parse_file(path: Path) -> CredentialStore:
    """The credentials of a TOML file; CredentialError naming the file and the entry."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise CredentialError(f"credentials file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CredentialError(f"credentials file {path}: {exc}") from None
    unknown = sorted(set(data) - {"credential"})
    if unknown:
        raise CredentialError(f"credentials file {path}: unknown key(s) {', '.join(unknown)}")
    entries = data.get("credential", [])
    if not isinstance(entries, list):
        raise CredentialError(f"credentials file {path}: 'credential' must be an array of tables")
    out = []
    for i, entry in enumerate(entries, 1):
        where = f"credentials file {path}: credential #{i}"
        if not isinstance(entry, Mapping):
            raise CredentialError(f"{where}: expected a table")
        extra = sorted(set(entry) - {"id", "scopes", "hash", "comment"})
        if extra:
            raise CredentialError(f"{where}: unknown key(s) {', '.join(extra)}")
        cid, scopes, stored = entry.get("id"), entry.get("scopes"), entry.get("hash")
        if not isinstance(cid, str) or not isinstance(stored, str):
            raise CredentialError(f"{where}: needs string keys 'id' and 'hash'")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise CredentialError(f"{where}: 'scopes' must be a list of strings")
        try:
            out.append(make_credential(cid, scopes, stored))
        except CredentialError as exc:
            raise CredentialError(f"{where}: {exc}") from None
    try:
        return CredentialStore(out)
    except CredentialError as exc:
        raise CredentialError(f"credentials file {path}: {exc}") from None


def parse_entries(text: str) -> CredentialStore:
    """``id=scope,scope=hash`` entries separated by ``;`` (the ``grpc_credentials`` key)."""
    out = []
    for i, raw in enumerate((e.strip() for e in text.split(";")), 1):
        if not raw:
            continue
        cid, _, rest = raw.partition("=")  # scopes hold ":", ids and hashes never "="
        scopes, _, stored = rest.partition("=")
        try:
            out.append(make_credential(cid, [s.strip() for s in scopes.split(",") if s.strip()], stored))
        except CredentialError as exc:
            raise CredentialError(f"entry #{i}: {exc}") from None
    return CredentialStore(out)


def _render(entries: Iterable[tuple[str, Iterable[str], str]]) -> str:
    lines = [
        "# Backend credentials of the telematics gateway (README: Backend authentication).",
        "# Only salted hashes of the secrets are kept here; create entries with",
        "# `telematics-gateway credentials add --id NAME --scope SCOPE`.",
    ]
    for cid, scopes, stored in entries:
        scope_list = ", ".join(f'"{s}"' for s in sorted(scopes))
        lines += ["", "[[credential]]", f'id = "{cid}"', f"scopes = [{scope_list}]", f'hash = "{stored}"']
    return "\n".join(lines) + "\n"


def add_credential(path: Path, credential_id: str, scopes: Iterable[str]) -> str:
    """Append a new credential to the file at `path` (created when missing); return its token.

    The token is returned once and stored nowhere: only its hash goes into the file."""
    chosen = check_scopes(scopes)
    existing: list[tuple[str, Iterable[str], str]] = []
    if path.exists():
        store = parse_file(path)  # refuse to rewrite a file we cannot read back
        existing = [(c.id, c.scopes, c.stored_hash()) for c in store]
        if credential_id in store:
            raise CredentialError(f"credential {credential_id!r} already exists in {path}")
    token, stored = new_token(credential_id)
    write_private(path, _render([*existing, (credential_id, chosen, stored)]).encode())
    return token


def ensure_admin(directory: Path) -> Path | None:
    """First start of the embedded default: create ``credentials.toml`` with an `admin`
    credential and write its token to ``admin.token`` (0600) beside it. Returns the token
    file's path when it was created now, None when the credentials file already existed."""
    path = directory / CREDENTIALS_FILE
    if path.exists():
        return None
    token_path = directory / ADMIN_TOKEN_FILE
    token = add_credential(path, ADMIN_ID, [ADMIN])
    write_private(token_path, (token + "\n").encode())
    return token_path


def read_token(path: Path) -> str:
    """A token file's content without surrounding whitespace (as `$(cat file)` gives it)."""
    return path.read_text(encoding="utf-8").strip()


class CredentialSource:
    """The accepted credentials: the file's (re-read when it changes, so a credential added
    with the CLI works without a restart) plus the fixed ones from the configuration.

    A file that becomes unreadable or malformed while running keeps the last good set: an
    operator's typo must not lock every backend out (the error is returned to be logged)."""

    def __init__(self, path: Path | None, fixed: CredentialStore | None = None) -> None:
        self.path = path
        self._fixed = fixed or CredentialStore()
        self._stamp: tuple[int, int, int] | None = None
        self._store = self._fixed
        if path is not None:
            self._store = CredentialStore.merged(parse_file(path), self._fixed)
            self._stamp = _stamp(path)

    def current(self) -> tuple[CredentialStore, str | None]:
        """(the credentials to check against, an error to log when a reload failed)."""
        if self.path is None:
            return self._store, None
        try:
            stamp = _stamp(self.path)
        except OSError:
            if self._stamp is None:
                return self._store, None  # already reported
            self._stamp = None
            return self._store, f"credentials file {self.path} is gone; keeping the last good set"
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._store = CredentialStore.merged(parse_file(self.path), self._fixed)
            except CredentialError as exc:
                return self._store, f"{exc}; keeping the last good set"
        return self._store, None


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size
