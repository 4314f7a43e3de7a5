"""/readyz names what is down; /healthz stays 200 (a gateway waiting for its database lives)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.http import build_http_app


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, dict[str, bool]]]:
    parts = {"mqtt": True, "store": True}
    runner = web.AppRunner(build_http_app(registry=CollectorRegistry(), readiness=lambda: dict(parts)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", parts
    finally:
        await runner.cleanup()


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def test_readyz_is_503_with_the_reason_store_unavailable_while_healthz_stays_200(
    served: tuple[str, dict[str, bool]],
) -> None:
    base, parts = served
    assert await get(f"{base}/readyz") == (200, {"status": "ready", "components": parts})
    parts["store"] = False
    status, body = await get(f"{base}/readyz")
    assert status == 503 and body["reason"] == "store unavailable" and body["status"] == "not ready"
    assert (await get(f"{base}/healthz"))[0] == 200


async def test_readyz_lists_warnings_and_stays_200_for_them() -> None:
    noted: list[str] = []
    runner = web.AppRunner(build_http_app(
        registry=CollectorRegistry(), readiness=lambda: {"mqtt": True}, warnings=lambda: list(noted)
    ))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/readyz"
        assert await get(url) == (200, {"status": "ready", "components": {"mqtt": True}})
        noted.append("short session expiry")
        assert await get(url) == (200, {"status": "ready", "components": {"mqtt": True},
                                      "warnings": ["short session expiry"]})
    finally:
        await runner.cleanup()


async def test_healthz_is_503_with_the_reason_while_the_process_is_wedged() -> None:
    wedged: list[str] = []
    runner = web.AppRunner(build_http_app(
        registry=CollectorRegistry(), readiness=lambda: {"mqtt": True},
        liveness=lambda: wedged[0] if wedged else None,
    ))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/healthz"
        assert await get(url) == (200, {"status": "alive"})
        wedged.append("pipeline wedged: 3 messages queued, none processed for 60 s")
        assert await get(url) == (503, {"status": "wedged", "reason": wedged[0]})
    finally:
        await runner.cleanup()
