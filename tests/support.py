"""Helpers shared by the test suites (importable because tests/ is on sys.path)."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import socket
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import grpc
from google.protobuf.descriptor import ServiceDescriptor

from gateway.api.client import aio_channel, token_from
from gateway.app import Gateway
from gateway.config import Config, load_config
from gateway.security.credentials import ADMIN_TOKEN_FILE, CREDENTIALS_DIR, new_token

T = TypeVar("T")


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


async def telemetry_subscribed(gw: Gateway, before: Collection[object]) -> None:
    """Wait until a SubscribeTelemetry stream that was not among `before` is registered (the
    call has reached the gateway), or fail after `eventually`'s timeout."""
    await eventually(
        lambda: asyncio.sleep(0, list(gw.fanout.subscribers)),
        lambda subs: any(sub not in before for sub in subs),
    )


def admin_token(data_dir: str | Path) -> str:
    """The admin token the gateway created on its first start under `data_dir`."""
    return token_from(Path(data_dir) / CREDENTIALS_DIR / ADMIN_TOKEN_FILE)


def admin_channel(port: int, data_dir: str | Path) -> grpc.aio.Channel:
    """A plaintext loopback channel to a gateway that authenticates as its admin credential."""
    return aio_channel(f"127.0.0.1:{port}", admin_token(data_dir))


def gateway_channel(gw: Gateway) -> grpc.aio.Channel:
    """An admin-authenticated channel to an in-process gateway."""
    return admin_channel(gw.grpc_port, gw.config.data_dir)


# A credential for gateways run as subprocesses (tests/integration/test_cli_run.py
# RunningGateway): given by the environment, as a deployment would inject it.
SUITE_TOKEN, _SUITE_HASH = new_token("test-suite")
SUITE_CREDENTIALS_ENV = {"GATEWAY_GRPC_CREDENTIALS": f"test-suite=admin={_SUITE_HASH}"}


def suite_channel(port: int) -> grpc.aio.Channel:
    """A channel to a subprocess gateway started with SUITE_CREDENTIALS_ENV."""
    return aio_channel(f"127.0.0.1:{port}", SUITE_TOKEN)


def gateway_services() -> list[ServiceDescriptor]:
    """Every service declared in proto/telematics/v1 (found by scanning the generated modules,
    so a new .proto file's services are included without editing a list)."""
    import gateway._gen.telematics.v1 as package

    services: list[ServiceDescriptor] = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            services += module.DESCRIPTOR.services_by_name.values()
    return sorted(services, key=lambda s: s.full_name)


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


async def scraped(gw: Gateway, name: str) -> float:
    """A sample of the gateway's /metrics as an SRE reads it (``name`` with its labels, e.g.
    'gateway_messages_rejected_total{reason="rate_limited"}'); missing: AssertionError."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.http_port}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not exported")


async def rejected(gw: Gateway, reason: str) -> float:
    """gateway_messages_rejected_total{reason}, from /metrics."""
    return await scraped(gw, f'gateway_messages_rejected_total{{reason="{reason}"}}')
