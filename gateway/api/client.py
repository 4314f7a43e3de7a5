"""Client side of backend authentication: channels that send ``authorization: Bearer <token>``
with every call (used by the tests, the load harness and the simulator; a template for backends).

Call credentials (``grpc.metadata_call_credentials``) are only sent over secure channels, so
a plaintext loopback channel gets the header from client interceptors instead; TLS channels
use the same interceptors, so both behave alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from gateway.api.auth import METADATA_KEY
from gateway.security.credentials import read_token


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """Per-call metadata for a sync stub: ``stub.Call(request, metadata=bearer_metadata(t))``."""
    return ((METADATA_KEY, f"Bearer {token}"),)


def _with_token(details: Any, token: str) -> Any:
    pairs = [(k, v) for k, v in (details.metadata or ()) if k != METADATA_KEY]
    return details._replace(metadata=grpc.aio.Metadata(*pairs, *bearer_metadata(token)))


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token(details, self._token), requests)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_with_token(details, self._token), requests)


def bearer_interceptors(token: str) -> list[Any]:
    # One object per call kind: grpc.aio files each interceptor under the first kind it is an
    # instance of, so one class implementing all four would only see unary-unary calls.
    return [_UnaryUnary(token), _UnaryStream(token), _StreamUnary(token), _StreamStream(token)]


def aio_channel(
    target: str,
    token: str | None,
    *,
    root_certificates: bytes | None = None,
    client_key: bytes | None = None,
    client_cert: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` that authenticates every call with `token` (None: no
    credential). With `root_certificates` the channel uses TLS (and a client certificate for
    mutual TLS when `client_key`/`client_cert` are given); otherwise plaintext."""
    interceptors = bearer_interceptors(token) if token else None
    if root_certificates is None:
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)
    creds = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
    return grpc.aio.secure_channel(target, creds, options=list(options), interceptors=interceptors)


def token_from(path: str | Path) -> str:
    return read_token(Path(path))
