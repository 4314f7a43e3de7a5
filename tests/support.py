"""Helpers shared by the test suites (importable because tests/ is on sys.path)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

T = TypeVar("T")


def grpc_channel(port: int) -> grpc.aio.Channel:
    """A backend's channel to the in-process gateway's gRPC port. The one place where tests
    say how a backend connects (TLS, credentials): use it as `async with grpc_channel(port)`."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 10.0
) -> T:
    """Poll an asynchronous outcome produced by another process (broker, gateway)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.02)  # paces the poll; a caller never uses this to prove an absence
