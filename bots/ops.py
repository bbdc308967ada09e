"""The operations endpoints: ``/healthz``, ``/readyz`` and ``/metrics``.

They share one HTTP server on ``PORT`` with Slack's events (in HTTP mode), so a
load balancer and Kubernetes probes see the same process that serves Slack.
``/healthz`` says the process is alive; ``/readyz`` that it can do its job
(platforms connected, Redis reachable) and turns 503 while draining, so a
rolling restart sends traffic elsewhere first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from core.metrics import ChatrelayMetrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT = 2.0


def add_ops_routes(
    app: web.Application,
    metrics: ChatrelayMetrics,
    checks: Mapping[str, Check],
    draining: Callable[[], bool],
) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                async with asyncio.timeout(CHECK_TIMEOUT):
                    results[name] = bool(await check())
            except Exception as exc:  # a failing check is a "not ready", never a crash
                log.warning("readiness check %s failed: %s", name, exc)
                results[name] = False
        if draining():
            results["accepting"] = False
        ready = all(results.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": results},
            status=200 if ready else 503,
        )

    async def metrics_text(request: web.Request) -> web.Response:
        return web.Response(
            text=metrics.registry.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
