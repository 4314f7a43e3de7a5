"""HTTP for SREs: /metrics (Prometheus text format), /healthz (alive, not wedged), /readyz (serving)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def build_http_app(
    *,
    registry: CollectorRegistry,
    readiness: Callable[[], dict[str, bool]],
    warnings: Callable[[], list[str]] = list,
    liveness: Callable[[], str | None] = lambda: None,
) -> web.Application:
    """readiness: the components that must be up, by name (e.g. broker session, store).
    warnings: conditions an operator should see that do not stop the gateway from serving (a
    short MQTT session expiry): listed by /readyz, which stays 200 for them.
    liveness: None while the process is alive, else why it is wedged (gateway/liveness.py):
    /healthz is 503 then, so the orchestrator restarts it."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        if (wedged := liveness()) is not None:
            return web.json_response({"status": "wedged", "reason": wedged}, status=503)
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        parts = readiness()
        down = [name for name, up in parts.items() if not up]
        body: dict[str, object] = {"status": "not ready" if down else "ready", "components": parts}
        if down:  # e.g. "store unavailable": the gateway waits for its database (alive, /healthz)
            body["reason"] = ", ".join(f"{name} unavailable" for name in down)
        if noted := warnings():
            body["warnings"] = noted
        return web.json_response(body, status=503 if down else 200)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
