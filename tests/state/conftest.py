"""Real Redis for the state tests, on all three topologies.

Every test here that talks to the shared Redis (through ``redis``,
``second_client``, ``keys`` or ``topology``) runs three times: on one server
(``REDIS_URL`` when set, else one embedded redis-server for the session), on
the session's Redis Cluster and on its Sentinel-watched master
(``tests/redis_fixtures.py``), with ids saying which: ``test_x[cluster]``. On a
cluster the keys are hash-tagged (``Keys(prefix, cluster=True)``), as
production's are. A test that needs a server of its own (``pausable``, or
marked ``single_server``: it embeds, pauses or kills one) runs once.

Each test gets its own key prefix and deletes only keys under it afterwards:
the servers may be shared with other suites, so nothing here ever flushes them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from core.state.keys import Keys
from core.state.topology import RedisClient, Topology, connect_to
from tests.redis_fixtures import SESSION_PREFIX, TOPOLOGIES
from tests.state.pausable import PausableRedis


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses the shared Redis on each topology."""
    if "topology" not in metafunc.fixturenames or "pausable" in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("single_server") is not None:
        return
    metafunc.parametrize("topology", TOPOLOGIES, indirect=True, ids=TOPOLOGIES)


@pytest.fixture
def redis_url(topology: Topology) -> str:
    """The URL of the one server, for code that takes one; a test that should run
    on every topology builds its clients with ``connect_to(topology)`` instead."""
    if topology.kind != "single" or topology.url is None:
        pytest.fail(f"redis_url names one server, not a {topology.kind}: use connect_to(topology)")
    return topology.url


@pytest.fixture
def keys(topology: Topology) -> Keys:
    return Keys(f"{SESSION_PREFIX}{uuid.uuid4().hex[:12]}:", cluster=topology.cluster)


async def connected(topology: Topology) -> RedisClient:
    """A client as ``open_redis`` hands it over: checked with a PING, which on a
    cluster also loads the slot map (a cold client's first commands wait ~0.2 s
    for it, and would upset tests that time their calls)."""
    client = connect_to(topology)
    await client.ping()
    return client


@pytest.fixture
async def redis(topology: Topology, keys: Keys) -> AsyncIterator[RedisClient]:
    client = await connected(topology)
    try:
        yield client
    finally:
        await delete_prefix(client, keys.prefix)
        await client.aclose()


async def delete_prefix(client: RedisClient, prefix: str) -> None:
    """Delete this test's keys, and only those.

    A cluster's ``scan_iter`` scans every primary; the keys are unlinked one per
    command in a pipeline without a transaction, which a cluster client splits by
    node (one ``DEL`` of many keys would have to hash to one slot). Through
    ``execute_command``: a cluster pipeline's ``unlink`` is a coroutine of the
    client's multi-key command, queued nowhere."""
    found = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
    if found:
        async with client.pipeline(transaction=False) as pipe:
            for key in found:
                pipe.execute_command("UNLINK", key)
            await pipe.execute()


@pytest.fixture
async def second_client(topology: Topology) -> AsyncIterator[RedisClient]:
    """Another connection pool, as a second replica would have."""
    client = await connected(topology)
    try:
        yield client
    finally:
        await client.aclose()


def state_settings(topology: Topology, **settings: Any) -> dict[str, Any]:
    """``load_state_settings`` arguments that point at ``topology``, plus ``settings``."""
    where: dict[str, Any]
    if topology.sentinels:
        sentinels = ",".join(f"{host}:{port}" for host, port in topology.sentinels)
        where = {"redis_sentinels": sentinels, "redis_sentinel_service": topology.service}
    else:
        where = {"redis_url": topology.url, "redis_cluster": topology.cluster}
    return where | settings


def unreachable(topology: Topology) -> Topology:
    """A topology of the same kind where nothing listens (port 1 refuses)."""
    nowhere = "redis://127.0.0.1:1/0"
    if topology.sentinels:
        return Topology(sentinels=(("127.0.0.1", 1),), service=topology.service)
    return Topology(url=nowhere, cluster=topology.cluster)


@pytest.fixture
def pausable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PausableRedis]:
    """A private redis-server the test may pause (SIGSTOP); resumed and stopped after."""
    server = PausableRedis(tmp_path_factory.mktemp("pausable"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
