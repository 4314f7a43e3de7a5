"""HTTP for SREs: /metrics (Prometheus text format), /healthz (alive), /readyz (serving)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def build_http_app(
    *, registry: CollectorRegistry, readiness: Callable[[], dict[str, bool]]
) -> web.Application:
    """readiness: the components that must be up, by name (e.g. broker session, store)."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        parts = readiness()
        ready = all(parts.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "components": parts},
            status=200 if ready else 503,
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
