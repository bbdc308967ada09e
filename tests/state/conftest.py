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
from redis.asyncio import Redis

from core.state.connection import EmbeddedRedis, connect
from core.state.keys import Keys
from tests.state.pausable import PausableRedis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"chatrelay-test:{uuid.uuid4().hex[:12]}:")


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
