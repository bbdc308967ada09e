"""The model client's pools (``core.llm.pool``): requests spread over several
httpx pools only once many are open, connections are reused, limits are
shared out, and closing the client closes every connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import httpx

from core.llm.client import Timeouts, http_client
from core.llm.pool import SHARDS, ShardedTransport, _open_requests
from tests.test_llm_chunked import BODY, EVENTS, HEAD, RawServer, Script, chunk, raw_server

__all__ = ["raw_server"]  # the fixture

LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=100)


def sharded(shards: int = 4, spread_at: int = 5, limits: httpx.Limits = LIMITS) -> ShardedTransport:
    context = httpx.create_ssl_context(verify=False)
    return ShardedTransport(verify=context, limits=limits, shards=shards, spread_at=spread_at)


def open_counts(transport: ShardedTransport) -> list[int]:
    return [_open_requests(pool) for pool in transport.pools]


async def until(condition: Callable[[], object], timeout: float = 2.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def test_the_model_client_shares_its_limits_out() -> None:
    client = http_client(Timeouts(), verify=True)
    transport = client._transport
    assert isinstance(transport, ShardedTransport)
    limits = transport._limits
    assert len(limits) == SHARDS
    assert sum(limit.max_keepalive_connections or 0 for limit in limits) == 100
    assert all(limit.max_connections is None for limit in limits)
    assert len(transport.pools) == 1  # nothing open yet: one pool
    assert http_client(Timeouts(), verify=False, shards=1)._transport.__class__ is (
        httpx.AsyncHTTPTransport
    )


async def test_one_request_at_a_time_reuses_one_connection(
    raw_server: tuple[RawServer, str],
) -> None:
    server, url = raw_server
    server.scripts += [Script([HEAD + BODY]) for _ in range(5)]
    transport = sharded()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(5):
            response = await client.post(url, json={})
            assert response.content == b"".join(EVENTS)
        assert len(transport.pools) == 1
    assert server.connections == 1
    await until(lambda: server.closed == 1)


async def test_open_requests_spread_over_pools_and_every_connection_closes(
    raw_server: tuple[RawServer, str],
) -> None:
    server, url = raw_server
    count = 40
    server.scripts += [Script([HEAD + chunk(b"hello")], stall=True) for _ in range(count)]
    transport = sharded(shards=4, spread_at=5)
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(count):
            request = client.build_request("POST", url, json={})
            responses.append(await client.send(request, stream=True))
        assert open_counts(transport) == [10, 10, 10, 10]
        assert server.connections == count  # none shared while open
        for response in responses[::2]:
            await response.aclose()
        assert sum(open_counts(transport)) == count // 2
    # closing the client closed every connection, those of responses still open too
    await until(lambda: server.closed == count)


async def test_keep_alive_is_shared_out_and_closing_closes_idle_connections(
    raw_server: tuple[RawServer, str],
) -> None:
    server, url = raw_server
    count = 24
    server.scripts += [Script([HEAD + BODY]) for _ in range(count)]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=8)
    transport = sharded(shards=4, spread_at=3, limits=limits)
    async with httpx.AsyncClient(transport=transport) as client:
        responses: Sequence[httpx.Response] = [
            await client.send(client.build_request("POST", url, json={}), stream=True)
            for _ in range(count)
        ]
        assert len(transport.pools) == 4
        for response in responses:
            assert await response.aread() == b"".join(EVENTS)
            await response.aclose()
        idle = sum(len(pool._pool.connections) for pool in transport.pools)
        assert 0 < idle <= 8  # each pool kept at most its share (2) alive
        await until(lambda: server.closed == count - idle)
    await until(lambda: server.closed == count)
