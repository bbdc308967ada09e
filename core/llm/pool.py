"""The model client's connection pool, split so thousands of open streams stay cheap.

httpcore's pool, on every request's start and end, walks every connection it
holds (closed? expired? idle?) and every queued request: with 2,000 replies
streaming at once, each start and end of one scans 2,000 connections, and the
process spent 12.5 % of its busy time there (``docs/benchmarks.md``, "Found in
core"). ``ShardedTransport`` spreads requests over several ordinary httpx
transports (pools), each with a share of the keep-alive limit: a request goes
to the one with the fewest requests open, and a new one is opened only once
each has ``SPREAD_AT`` open, so a scan covers at most about
``open requests / shards`` connections and a process with few requests (``chatrelay
ask``, a quiet bot) has one pool, exactly as before. Every pool shares one TLS
context (building one costs 30-50 ms of CPU).
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

SHARDS = 16
"""Pools at most; at 2,000 open streams each holds about 125."""
SPREAD_AT = 32
"""Open requests in every pool before another pool is opened."""


class ShardedTransport(httpx.AsyncBaseTransport):
    """Up to ``shards`` ``httpx.AsyncHTTPTransport`` pools behind one transport."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext,
        limits: httpx.Limits,
        shards: int = SHARDS,
        spread_at: int = SPREAD_AT,
    ) -> None:
        if shards < 1:
            raise ValueError("at least one shard is needed")
        keepalive = limits.max_keepalive_connections
        self._limits = [
            httpx.Limits(
                max_connections=_share(limits.max_connections, shards, index, at_least=1),
                max_keepalive_connections=_share(keepalive, shards, index, at_least=0),
                keepalive_expiry=limits.keepalive_expiry,
            )
            for index in range(shards)
        ]
        self._verify = verify
        self._spread_at = spread_at
        self._pools: list[httpx.AsyncHTTPTransport] = []
        self._add()

    @property
    def pools(self) -> list[httpx.AsyncHTTPTransport]:
        """The pools opened so far (one until requests pile up)."""
        return list(self._pools)

    def _add(self) -> httpx.AsyncHTTPTransport:
        pool = httpx.AsyncHTTPTransport(verify=self._verify, limits=self._limits[len(self._pools)])
        self._pools.append(pool)
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._choose().handle_async_request(request)

    def _choose(self) -> httpx.AsyncHTTPTransport:
        """The pool with the fewest requests open (the first of equals, so a
        quiet client keeps reusing the first pool's connections); a new pool
        when every one has ``spread_at`` open."""
        best = self._pools[0]
        fewest = _open_requests(best)
        for pool in self._pools[1:]:
            if fewest == 0:
                break
            count = _open_requests(pool)
            if count < fewest:
                best, fewest = pool, count
        if fewest >= self._spread_at and len(self._pools) < len(self._limits):
            return self._add()
        return best

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _open_requests(pool: httpx.AsyncHTTPTransport) -> int:
    """Requests waiting for or using one of ``pool``'s connections (httpcore
    keeps them in a list it updates on every start and end)."""
    requests: Any = getattr(getattr(pool, "_pool", None), "_requests", ())
    return len(requests)


def _share(total: int | None, shards: int, index: int, *, at_least: int) -> int | None:
    """Shard ``index``'s part of a limit: ``total`` split as evenly as whole
    numbers allow (the first ones get one more), never below ``at_least``; no
    limit (None) stays none."""
    if total is None:
        return None
    return max(at_least, total // shards + (1 if index < total % shards else 0))
