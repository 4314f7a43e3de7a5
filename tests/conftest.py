"""Shared fixtures. Integration tests start their own Mosquitto with the project's config."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.broker.managed import ManagedBroker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ManagedBroker]:
    """A Mosquitto on a free port with the project's configuration and ACL."""
    b = ManagedBroker(directory=tmp_path / "broker", port=free_port())
    b.start_sync()
    try:
        yield b
    finally:
        b.stop_sync()


@pytest.fixture
async def anyio_backend() -> AsyncIterator[str]:  # pragma: no cover - not used, keeps plugins quiet
    yield "asyncio"
