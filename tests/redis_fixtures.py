"""The suite's real Redis servers as fixtures (a plugin ``tests/conftest.py`` loads).

- ``single_redis_url``: ``REDIS_URL`` when set (CI points it at the machine's
  Redis), else one embedded redis-server for the session;
- ``redis_cluster``, ``redis_sentinel``: a ``LocalCluster`` and a ``LocalSentinel``
  (``tests/redis_servers.py``), started when a test first asks, then shared by
  the session. Nothing may change their shape: a test that kills a master asks
  ``private_cluster()`` / ``private_sentinel()`` for topologies of its own,
  stopped after it;
- ``topology``: the ``core.state.topology.Topology`` a test runs on: the one
  server unless parametrised (``indirect``) with a name of ``TOPOLOGIES``, as
  ``tests/state/conftest.py`` does to run its tests on all three.

Tests put their keys under ``SESSION_PREFIX``, and at the session's end no key
under it may be left on any shared server: a leak (a reply task still writing
after its test cleaned up, say) fails the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from redis import Redis as SyncRedis
from redis.cluster import RedisCluster as SyncRedisCluster

from core.state.connection import EmbeddedRedis
from core.state.topology import Topology
from tests.redis_servers import LocalCluster, LocalSentinel

SESSION_PREFIX = f"chatrelay-test:{uuid.uuid4().hex[:8]}:"
"""Every test's keys live under it, so the session can tell what it leaked."""

TOPOLOGIES = ("single", "cluster", "sentinel")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "single_server: never parametrised over topologies: the test needs one server "
        "of its own (which it pauses, kills or embeds)",
    )


@pytest.fixture(scope="session")
def single_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The one-server Redis of the session."""
    url = os.environ.get("REDIS_URL")
    server: EmbeddedRedis | None = None
    if not url:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
        server.start()
        url = server.url
    try:
        yield url
        _no_leaks(_scan(SyncRedis.from_url(url, socket_timeout=5)))
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters with a replica each, shared by the session: never kill one."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
        client = SyncRedisCluster.from_url(cluster.url, socket_timeout=5)
        _no_leaks(_scan(client))  # scan_iter asks every primary
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A master, a replica and three sentinels, shared by the session: never fail it over."""
    sentinel = LocalSentinel(tmp_path_factory.mktemp("sentinel")).start()
    try:
        yield sentinel
        _no_leaks(_scan(SyncRedis.from_url(sentinel.master_url, socket_timeout=5)))
    finally:
        sentinel.stop()


@pytest.fixture
def private_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], LocalCluster]]:
    """Starts a cluster of the test's own (which it may break); all stopped after it."""
    started: list[LocalCluster] = []

    def start() -> LocalCluster:
        started.append(LocalCluster(tmp_path_factory.mktemp("private-cluster")).start())
        return started[-1]

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()


@pytest.fixture
def private_sentinel(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], LocalSentinel]]:
    """Starts a Sentinel setup of the test's own (which it may fail over); stopped after."""
    started: list[LocalSentinel] = []

    def start() -> LocalSentinel:
        started.append(LocalSentinel(tmp_path_factory.mktemp("private-sentinel")).start())
        return started[-1]

    try:
        yield start
    finally:
        for sentinel in started:
            sentinel.stop()


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> Topology:
    """Where the test's Redis is: the session's one server, or, parametrised with
    "cluster" or "sentinel", the session's cluster or Sentinel setup (started only
    when a test first needs it)."""
    kind = getattr(request, "param", "single")
    if kind == "single":
        return Topology(url=request.getfixturevalue("single_redis_url"))
    if kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return Topology(url=cluster.url, cluster=True)
    if kind == "sentinel":
        sentinel: LocalSentinel = request.getfixturevalue("redis_sentinel")
        return Topology(sentinels=tuple(sentinel.sentinels), service=sentinel.service)
    raise ValueError(f"no topology {kind!r}: one of {', '.join(TOPOLOGIES)}")


def _scan(client: SyncRedis | SyncRedisCluster) -> list[str]:
    try:
        found = client.scan_iter(match=SESSION_PREFIX + "*", count=1000)
        return sorted(key.decode() for key in found)
    finally:
        client.close()


def _no_leaks(leaked: list[str]) -> None:
    assert not leaked, f"the suite left {len(leaked)} Redis keys behind: {leaked[:10]}"
