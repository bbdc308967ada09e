"""A real Redis for the state tests: ``REDIS_URL`` when set (CI points it at the
machine's Redis), else one embedded redis-server for the whole session.

Each test gets its own key prefix and deletes only keys under it afterwards:
the server may be shared with other suites, so nothing here ever flushes it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from core.state.connection import EmbeddedRedis, connect
from core.state.keys import Keys
from tests.state.pausable import PausableRedis

SESSION_PREFIX = f"chatrelay-test:{uuid.uuid4().hex[:8]}:"
"""Every test's keys live under it, so the session can tell what it leaked."""


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis of the session; at its end, no test may have left a key behind
    (a reply task still writing after its test cleaned up, say)."""
    url = os.environ.get("REDIS_URL")
    server: EmbeddedRedis | None = None
    if not url:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
        server.start()
        url = server.url
    try:
        yield url
        leaked = _leaked_keys(url)
        assert not leaked, f"the suite left {len(leaked)} Redis keys behind: {leaked[:10]}"
    finally:
        if server is not None:
            server.stop()


def _leaked_keys(url: str) -> list[str]:
    client = SyncRedis.from_url(url, socket_timeout=5)
    try:
        return sorted(k.decode() for k in client.scan_iter(match=SESSION_PREFIX + "*", count=1000))
    finally:
        client.close()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"{SESSION_PREFIX}{uuid.uuid4().hex[:12]}:")


@pytest.fixture
async def redis(redis_url: str, keys: Keys) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    try:
        yield client
    finally:
        await delete_prefix(client, keys.prefix)
        await client.aclose()


async def delete_prefix(client: Redis, prefix: str) -> None:
    """Delete this test's keys, and only those."""
    batch = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
    if batch:
        await client.delete(*batch)


@pytest.fixture
async def second_client(redis_url: str) -> AsyncIterator[Redis]:
    """Another connection pool, as a second replica would have."""
    client = connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def pausable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PausableRedis]:
    """A private redis-server the test may pause (SIGSTOP); resumed and stopped after."""
    server = PausableRedis(tmp_path_factory.mktemp("pausable"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
