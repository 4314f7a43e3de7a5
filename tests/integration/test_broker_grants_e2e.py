"""What a broker grants on CONNACK, against what the configuration relies on: a missing feature
stops the start with one line and exit 2; a short session expiry is logged, exported and shown
by /readyz. The brokers here are tests/connack_listener.py (Mosquitto always offers shared
subscriptions and grants the session expiry asked for, so it cannot play these parts)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from connack_listener import ConnackListener
from support import SUITE_CREDENTIALS_ENV, free_port, gateway_config, scraped

from gateway.app import Gateway, GatewayStartError
from gateway.ingress import mqtt5_codec as codec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NO_SHARED: codec.Properties = {codec.SHARED_SUBSCRIPTION_AVAILABLE: 0}


async def test_run_with_a_shared_group_on_a_broker_without_shared_subscriptions_exits_2_in_one_line(
    tmp_path: Path,
) -> None:
    async with ConnackListener(NO_SHARED) as broker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", cwd=ROOT,
            env=dict(
                os.environ, PYTHONPATH=str(ROOT), **SUITE_CREDENTIALS_ENV,
                GATEWAY_DATA_DIR=str(tmp_path / "data"),
                GATEWAY_MQTT_URL=f"mqtt://127.0.0.1:{broker.port}",
                GATEWAY_MQTT_SHARED_GROUP="ingest",
                GATEWAY_GRPC_LISTEN=f"127.0.0.1:{free_port()}",
                GATEWAY_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
            ),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    said = (out + err).decode()
    assert proc.returncode == 2, said
    assert broker.connects == 1
    errors = [line for line in said.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in said, said
    assert "does not support shared subscriptions" in errors[0], errors
    assert "mqtt_shared_group = 'ingest'" in errors[0], errors


@asynccontextmanager
async def gateway_on(tmp_path: Path, broker: ConnackListener, **overrides: Any) -> AsyncIterator[Gateway]:
    url = f"mqtt://127.0.0.1:{broker.port}"
    gw = Gateway(gateway_config(tmp_path, free_port(), mqtt_url=url, **overrides))
    try:
        await gw.start()
        yield gw
    finally:
        await gw.stop()


async def test_a_broker_refusing_shared_filters_at_subscribe_is_a_start_error_not_a_crash(
    tmp_path: Path,
) -> None:
    # A broker that says nothing on CONNACK but answers SUBACK 0x9e (shared subscriptions
    # not supported): still one line, through GatewayStartError (exit 2 in `run`).
    async with ConnackListener({}, suback_code=0x9E) as broker:
        with pytest.raises(GatewayStartError, match="Shared subscriptions not supported"):
            async with gateway_on(tmp_path, broker, mqtt_shared_group="ingest"):
                pass


async def test_a_broker_granting_no_session_expiry_is_a_start_error(tmp_path: Path) -> None:
    async with ConnackListener({codec.SESSION_EXPIRY: 0}) as broker:
        with pytest.raises(GatewayStartError, match="grants no persistent session") as caught:
            async with gateway_on(tmp_path, broker):
                pass
    assert "\n" not in str(caught.value)


async def readyz(gw: Gateway) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.http_port}/readyz") as resp:
        return resp.status, await resp.json()


async def test_a_short_granted_session_expiry_is_exported_and_a_readyz_warning(tmp_path: Path) -> None:
    async with ConnackListener({codec.SESSION_EXPIRY: 300}) as broker, gateway_on(tmp_path, broker) as gw:
        assert await scraped(gw, "gateway_mqtt_session_expiry_seconds") == 300
        status, body = await readyz(gw)
        assert status == 200 and body["status"] == "ready", body
        [warning] = body["warnings"]
        assert "session expiry of 300 s" in warning and "asked 604800 s" in warning


async def test_a_long_enough_session_expiry_is_no_warning(tmp_path: Path) -> None:
    async with ConnackListener({codec.SESSION_EXPIRY: 3600}) as broker, gateway_on(tmp_path, broker) as gw:
        assert await scraped(gw, "gateway_mqtt_session_expiry_seconds") == 3600
        status, body = await readyz(gw)
        assert status == 200 and "warnings" not in body, body
