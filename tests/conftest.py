"""Shared fixtures. Integration tests start their own Mosquitto with the project's config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import free_port

from gateway.broker.managed import ManagedBroker


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
