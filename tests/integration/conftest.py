"""An in-process gateway wired exactly as `run` wires it: managed Mosquitto on a free port,
SQLite in tmp_path, gRPC and HTTP on ephemeral ports."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import free_port, gateway_channel

from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import Config, load_config


def gateway_config(tmp_path: Path, mqtt_port: int, **overrides: Any) -> Config:
    # The gateway reaches its managed broker over TLS with its own certificate, as `run` does:
    # every test through this fixture exercises that path. Its own free port: tests run beside
    # each other (and beside other checkouts) on one machine.
    overrides.setdefault("mqtt_tls_port", free_port())
    return load_config(
        None,  # no config file: the overrides below are the whole configuration
        env={},
        data_dir=str(tmp_path / "data"),
        mqtt_port=mqtt_port,
        grpc_listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        **overrides,
    )


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
