"""An in-process gateway wired exactly as `run` wires it: managed Mosquitto on a free port,
SQLite in tmp_path, gRPC and HTTP on ephemeral ports.

A test that must hold on every broker the project supports parametrizes `broker_kind`
(`@pytest.mark.parametrize("broker_kind", BROKERS)`): with "ejabberd" the `gateway` fixture
uses the session's private ejabberd (tests/ejabberd_support.py) as its external broker
(`mqtt_url`), and the test's cars reach that broker through `car_link`."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from ejabberd_support import Ejabberd
from support import free_port, gateway_channel, gateway_config
from vehicle_client import CarLink

from gateway.app import Gateway
from gateway.clock import ManualClock


@pytest.fixture
def broker_kind() -> str:
    """The gateway's broker: the managed Mosquitto unless a test parametrizes this."""
    return "mosquitto"


@pytest.fixture
def car_link(broker_kind: str, gateway: Gateway, request: pytest.FixtureRequest) -> CarLink:
    if broker_kind == "ejabberd":
        node: Ejabberd = request.getfixturevalue("ejabberd")
        return CarLink(node.port, "car", "anonymous-login")
    return CarLink(gateway.config.mqtt_port)


@pytest.fixture
async def gateway(tmp_path: Path, broker_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    if broker_kind == "ejabberd":
        node: Ejabberd = request.getfixturevalue("ejabberd")
        # Its own persistent session on the shared broker: nothing queued for another test's.
        config = gateway_config(tmp_path, free_port(), mqtt_url=node.url,
                                mqtt_client_id=f"gw-{secrets.token_hex(6)}")
    else:
        config = gateway_config(tmp_path, free_port())
    gw = Gateway(config)
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
