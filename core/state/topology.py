"""Which kind of Redis chatrelay talks to: one server, a Redis Cluster, or a
master watched by Sentinel; and a client for each.

All three hand the rest of ``core.state`` a client with the same commands, so
the state code has one implementation. Where a cluster differs (a script or
transaction may touch one hash slot only, pub/sub is sharded, a multi-key read
spans nodes) the key layout (``core.state.keys``) and a few calls
(``is_cluster``) account for it; a Sentinel master is an ordinary ``Redis``
whose pool asks the sentinels where the master is now, so a failover looks to
us like a short outage, which every caller on a reply's path already survives.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisClient: TypeAlias = Redis | RedisCluster
"""What ``core.state`` is handed: one server's (or Sentinel's master's) client, or a cluster's."""
AnyPipeline: TypeAlias = Pipeline | ClusterPipeline

CONNECT_TIMEOUT = 2.0
"""Seconds to connect: short, so a dead Redis turns into a fallback quickly."""
HEALTH_CHECK_INTERVAL = 10
"""Seconds of idleness after which a pooled or pub/sub connection is PINGed
before use, so a silently dropped connection is found rather than waited on."""
KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
"""A peer that vanished without closing (a partition) is declared dead in ~25 s."""
MAX_CONNECTIONS = 500
"""Connections one process may open to Redis (to each node, on a cluster)
(``REDIS_MAX_CONNECTIONS``). redis-py's default pool stops at 100 and then
*fails* the next command, which a process with 200 replies in flight hit: its
budgets, locks and in-flight records degraded as if Redis were down. Our pools
wait instead (``POOL_WAIT``), except a cluster's (see ``connect_cluster``)."""
CLUSTER_ATTEMPTS = 3
"""Retries of a cluster command after a connection error (see ``connect_cluster``)."""
POOL_WAIT = 5.0
"""Seconds a command waits for a free pooled connection once all are in use
(a reply's own calls are bounded sooner, by ``bounded``). One server's and a
Sentinel master's pools wait; a cluster's cannot (see ``connect_cluster``)."""
SENTINEL_TIMEOUT = 0.5
"""Seconds one sentinel may take to say where the master is before the next is
asked. A sentinel answers from memory in a millisecond; one that accepts and
never answers (paused, partitioned) would otherwise hold every new connection
to the master, it being asked first until another answers."""


@dataclass(frozen=True, slots=True)
class Topology:
    """Where Redis is (``StateSettings.topology``).

    ``url`` alone: one server. With ``cluster``: any node of a Redis Cluster,
    the rest found from it. With ``sentinels``: the sentinels to ask for
    ``service``'s master; ``url``, if given, supplies only the credentials,
    database and TLS (``rediss://``) for the master, its host being ignored.
    """

    url: str | None = None
    cluster: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = "mymaster"
    sentinel_password: str | None = None

    @property
    def kind(self) -> str:
        if self.cluster:
            return "cluster"
        return "sentinel" if self.sentinels else "single"

    def __repr__(self) -> str:
        # The dataclass's own repr would print the URL's and the sentinels' passwords
        # wherever a topology is logged, or shown in a traceback's locals.
        return f"Topology({self.kind}: {self.describe()})"

    def describe(self) -> str:
        """Where we looked, for an error message (no password)."""
        if self.sentinels:
            where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"sentinels {where} (service {self.service})"
        return f"cluster node {redact(self.url or '')}" if self.cluster else redact(self.url or "")


def is_cluster(redis: RedisClient) -> bool:
    return isinstance(redis, RedisCluster)


def redact(url: str) -> str:
    """``url`` with any password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def _tcp_options(url: str | None) -> dict[str, Any]:
    if url is not None and urlsplit(url).scheme == "unix":
        return {}  # a local socket has no peer to lose
    return {
        "socket_keepalive": True,
        "socket_keepalive_options": {
            getattr(socket, name): value
            for name, value in KEEPALIVE.items()
            if hasattr(socket, name)
        },
    }


def _common(url: str | None) -> dict[str, Any]:
    """Options every client gets.

    No ``socket_timeout``: with one, redis-py wraps every write in
    ``asyncio.wait_for``, which on Python 3.11 swallows a cancellation that
    lands as the write completes, so a cancelled task would carry on (see
    ``tests/state/test_connection.py``). Dead peers are found by TCP keepalive
    instead, and every call on a reply's path is bounded by ``bounded`` (an
    ``asyncio.timeout``).

    One immediate retry replaces a pooled connection that died with a restarted
    server; more retries with backoff (redis-py's default) would hold a reply
    for seconds before its budget can fall back to the local one.
    """
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": None,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": Retry(NoBackoff(), 1),
        **_tcp_options(url),
    }


def connect(url: str, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client for the one server at ``url``, with a *blocking* pool: at
    ``max_connections`` a command waits for a connection to come back instead
    of failing."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT, **_common(url)
    )
    return Redis.from_pool(pool)


def connect_cluster(url: str, max_connections: int = MAX_CONNECTIONS) -> RedisCluster:
    """A cluster client that starts from the node at ``url`` and learns the rest.

    A moved slot (resharding, or a replica promoted after its master died) is
    followed by redis-py, which re-reads the slot map; the few retries it makes
    fit inside ``bounded``'s limit, after which the caller degrades as for any
    outage. Scripts are loaded per node: ``EVALSHA`` answered ``NOSCRIPT`` by a
    node that never saw the script (a promoted replica) is loaded there and
    run again (``Script.__call__``, ``batch.answers``).

    Unlike ``connect``'s and ``connect_sentinel``'s pools, a cluster's cannot
    wait for a free connection: redis-py keeps one pool per node
    (``ClusterNode``, which ``RedisCluster`` builds itself, no pool class to
    swap in), and at ``max_connections`` to one node the next command to it
    fails at once with ``MaxConnectionsError``, a ``ConnectionError``: callers
    degrade as for an outage until connections come back. ``max_connections``
    counts per node, and a busy process's keys spread over the nodes.
    """
    options = _common(url)
    options.pop("health_check_interval")  # cluster nodes take no health checks
    # A failover leaves pooled connections to the dead master: the first attempt
    # finds one, the next re-reads the slot map, the one after reaches the
    # promoted replica. Refused connections fail at once and ``bounded`` caps
    # the total, so the extra attempts cost nothing while Redis is really gone.
    options["retry"] = Retry(NoBackoff(), CLUSTER_ATTEMPTS)
    return RedisCluster.from_url(
        url,
        max_connections=max_connections,
        require_full_coverage=True,
        **options,
    )


class _SentinelClient(Redis):
    """A client of one sentinel whose every command gives up after
    ``SENTINEL_TIMEOUT``, so that ``Sentinel.discover_master`` asks the next.

    Bounded by ``asyncio.timeout`` rather than a ``socket_timeout``: redis-py
    wraps a socket timeout in ``asyncio.wait_for``, which on Python 3.11 can
    swallow the cancellation of the task asking (see ``_common``), and a reply's
    task asks whenever its command needs a new connection to the master. Expiry
    is a redis-py ``TimeoutError``, the kind ``discover_master`` moves on after.
    """

    def __repr__(self) -> str:  # in MasterNotFoundError's message: short, no options
        where = self.connection_pool.connection_kwargs
        return f"sentinel {where.get('host')}:{where.get('port')}"

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            async with asyncio.timeout(SENTINEL_TIMEOUT) as deadline:
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except TimeoutError:
            if deadline.expired():
                raise RedisTimeoutError(f"no answer within {SENTINEL_TIMEOUT:g} s") from None
            raise


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel master's pool that, like ``connect``'s, waits up to ``timeout``
    for a connection once ``max_connections`` are in use: redis-py's
    ``SentinelConnectionPool`` alone fails the command ("Too many connections").
    Sentinel's pool contributes finding the master and dropping connections to
    a demoted one; the blocking pool, getting and releasing connections."""


class _SentinelMaster(Redis):
    """The master's client, which on closing also closes its connections to the
    sentinels (redis-py leaves those to whoever made the ``Sentinel``, which
    only ``connect_sentinel`` ever sees: they stayed open until collected)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        try:
            await super().aclose(close_connection_pool)
        finally:
            if isinstance(pool, SentinelConnectionPool):
                await pool.sentinel_manager.aclose()


def connect_sentinel(topology: Topology, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client for the master Sentinel names for ``topology.service``; after a
    failover its next connection goes to the new master.

    The sentinels are asked with one attempt each, no retries (redis-py's default
    retries with backoff took ~8.5 s to report that no sentinel answers), and
    each for at most ``SENTINEL_TIMEOUT``; the master's connections retry as
    ``_common``'s do, each retry asking the sentinels again."""
    master: dict[str, Any] = {}
    if topology.url:
        master = dict(parse_url(topology.url))
        for ignored in ("host", "port", "path", "connection_class"):
            master.pop(ignored, None)
        if urlsplit(topology.url).scheme == "rediss":
            master["ssl"] = True
    options = _common(topology.url)
    asking: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": None,  # see _SentinelClient
        "retry": Retry(NoBackoff(), 0),
        **_tcp_options(None),
    }
    if topology.sentinel_password:
        asking["password"] = topology.sentinel_password
    # Sentinel's own clients of the sentinels would be plain ``Redis``: none are made.
    sentinel = Sentinel([], **options, **master)  # type: ignore[no-untyped-call]
    sentinel.sentinels = [
        _SentinelClient(host=host, port=port, **asking) for host, port in topology.sentinels
    ]
    client: Redis = sentinel.master_for(
        topology.service,
        redis_class=_SentinelMaster,
        connection_pool_class=_BlockingSentinelPool,
        max_connections=max_connections,
        timeout=POOL_WAIT,
    )
    return client


def connect_to(topology: Topology, max_connections: int = MAX_CONNECTIONS) -> RedisClient:
    """The client ``topology`` asks for (its ``url`` must be set unless Sentinel)."""
    if topology.sentinels:
        return connect_sentinel(topology, max_connections)
    if topology.url is None:
        raise ValueError("no Redis URL to connect to")
    if topology.cluster:
        return connect_cluster(topology.url, max_connections)
    return connect(topology.url, max_connections)
