"""An in-process gateway wired exactly as `run` wires it: managed Mosquitto on a free port,
SQLite in tmp_path, gRPC and HTTP on ephemeral ports."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from support import free_port, gateway_channel, gateway_config

from gateway.app import Gateway
from gateway.clock import ManualClock


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(gateway_config(tmp_path, free_port()))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with gateway_channel(gateway) as ch:
        yield ch


@pytest.fixture
async def clocked_gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, ManualClock]]:
    """A gateway whose time moves only when the test says so."""
    clock = ManualClock(start=time.time())
    gw = Gateway(gateway_config(tmp_path, free_port()), clock=clock)
    await gw.start()
    try:
        yield gw, clock
    finally:
        await gw.stop()
