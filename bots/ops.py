"""The operations endpoints: ``/healthz`` and ``/readyz`` on ``PORT``, and
``/metrics`` on ``METRICS_PORT``.

The probes share one HTTP server on ``PORT`` with Slack's events (in HTTP mode), so a
load balancer and Kubernetes probes see the same process that serves Slack.
``/metrics`` has a server of its own on ``METRICS_PORT`` (``metrics_app``): an
ingress that exposes Slack's ``/slack/events`` exposes the whole of ``PORT``,
and what the metrics tell (models, error rates, versions) is not for the internet.
``/healthz`` says the process is alive, and alive means more than answering
HTTP: a worker whose Socket Mode or Discord gateway connection has been down
for longer than ``LIVENESS_DOWN_AFTER`` (while not draining) takes no events
and won't by itself, so ``/healthz`` turns 503 and Kubernetes restarts it. A
reconnect within that time is normal life (Slack rotates Socket Mode
connections, Discord asks for resumes) and keeps it 200. ``/readyz`` says the
process can do its job now (platforms connected, Redis reachable) and turns
503 while draining, so a rolling restart sends traffic elsewhere first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

from aiohttp import web

from core.telemetry.metrics import ChatrelayMetrics

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT = 2.0


class Liveness:
    """How long each platform connection has been down, as seen by the probes.

    Every check of ``checks`` (read at each probe: a platform may be added
    later) except those in ``skip``: only what a restart can mend counts. Not
    Redis: a process without Redis degrades and recovers by itself, and
    restarting every replica in an outage would only lose replies."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        down_after: float,
        draining: Callable[[], bool],
        *,
        skip: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = checks
        self._skip = frozenset(skip)
        self._down_after = down_after
        self._draining = draining
        self._clock = clock
        self._up_at: dict[str, float] = {}

    async def dead(self) -> dict[str, float]:
        """Connections down longer than allowed -> seconds since last seen up."""
        now = self._clock()
        dead: dict[str, float] = {}
        for name, check in list(self._checks.items()):
            if name in self._skip:
                continue
            if await _passes(name, check, "liveness"):
                self._up_at[name] = now
                continue
            since = self._up_at.setdefault(name, now)  # never seen up: count from now
            if now - since > self._down_after and not self._draining():
                dead[name] = round(now - since, 1)
        return dead


async def _passes(name: str, check: Check, kind: str) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return bool(await check())
    except Exception as exc:  # a failing check is a "no", never a crash
        log.warning("%s check %s failed: %s", kind, name, exc)
        return False


def add_ops_routes(
    app: web.Application,
    checks: Mapping[str, Check],
    draining: Callable[[], bool],
    liveness: Liveness | None = None,
) -> None:
    """``/healthz`` and ``/readyz`` on ``app`` (``/metrics`` has a port of its
    own: ``metrics_app``)."""

    async def healthz(request: web.Request) -> web.Response:
        dead = await liveness.dead() if liveness is not None else {}
        if dead:
            return web.json_response({"status": "dead", "down_for_seconds": dead}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        results: dict[str, bool] = {}
        for name, check in checks.items():
            results[name] = await _passes(name, check, "readiness")
        if draining():
            results["accepting"] = False
        ready = all(results.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": results},
            status=200 if ready else 503,
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def metrics_app(metrics: ChatrelayMetrics) -> web.Application:
    """The ``METRICS_PORT`` server: ``/metrics`` in the Prometheus text format, or
    OpenMetrics when the scraper's ``Accept`` asks for it (Prometheus does), gzipped
    when it accepts gzip."""

    async def exposition(request: web.Request) -> web.Response:
        body, content_type = metrics.registry.exposition(request.headers.get("Accept", ""))
        response = web.Response(
            body=body,
            headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"},
        )
        response.enable_compression()
        return response

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    return app
