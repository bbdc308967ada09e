"""``/healthz`` for workers: 503 once a platform connection has been down longer
than allowed (so Kubernetes restarts the process), 200 through short
reconnects, while draining, and whatever Redis does. Real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from bots.ops import Check, Liveness, add_ops_routes


class Switch:
    def __init__(self) -> None:
        self.up = True

    async def __call__(self) -> bool:
        return self.up


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def probe() -> AsyncIterator[tuple[httpx.AsyncClient, Switch, Switch, Clock, list[bool]]]:
    gateway, redis, clock, draining = Switch(), Switch(), Clock(), [False]
    checks: dict[str, Check] = {"redis": redis, "discord": gateway}
    app = web.Application()
    liveness = Liveness(checks, 180, lambda: draining[0], skip={"redis"}, clock=clock)
    add_ops_routes(app, checks, lambda: draining[0], liveness)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
        yield http, gateway, redis, clock, draining
    await runner.cleanup()


async def test_a_connection_down_too_long_fails_healthz(
    probe: tuple[httpx.AsyncClient, Switch, Switch, Clock, list[bool]],
) -> None:
    http, gateway, _, clock, _ = probe
    assert (await http.get("/healthz")).status_code == 200
    gateway.up = False
    clock.now = 60.0
    assert (await http.get("/healthz")).status_code == 200  # a reconnect takes a while
    clock.now = 181.0
    dead = await http.get("/healthz")
    assert dead.status_code == 503
    assert dead.json() == {"status": "dead", "down_for_seconds": {"discord": 181.0}}
    gateway.up = True  # back before the orchestrator acted: alive again
    assert (await http.get("/healthz")).status_code == 200


async def test_short_drops_redis_and_draining_never_fail_it(
    probe: tuple[httpx.AsyncClient, Switch, Switch, Clock, list[bool]],
) -> None:
    http, gateway, redis, clock, draining = probe
    redis.up = False  # Redis away: degrade, don't restart every replica
    for minute in range(1, 6):
        gateway.up = minute % 2 == 0  # down and up again between probes
        clock.now = minute * 100.0
        assert (await http.get("/healthz")).status_code == 200
    gateway.up = False
    draining[0] = True  # closed on purpose: the drain must finish
    clock.now = 10_000.0
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 503
