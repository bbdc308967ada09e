"""The Redis topologies of ``tests/redis_servers.py`` are what they claim to be:
a cluster of three masters with a replica each that fails over, and a master
whose sentinels promote its replica when it dies. Checked from outside, with
redis-py's own cluster and Sentinel clients (not chatrelay's)."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.crc import key_slot
from redis.exceptions import ResponseError

from tests.redis_fixtures import SESSION_PREFIX
from tests.redis_servers import (
    SLOTS,
    LocalCluster,
    LocalSentinel,
    Node,
    RedisServerMissing,
    info,
    redis_binaries,
)


def _key(name: str) -> str:
    return f"{SESSION_PREFIX}servers:{uuid.uuid4().hex[:8]}:{name}"


def test_the_servers_are_redis_7_or_newer() -> None:
    binaries = redis_binaries()
    assert binaries.version >= (7, 0, 0)


def test_without_a_redis_7_server_the_error_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    redis_binaries.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))
    try:
        with pytest.raises(RedisServerMissing, match="Debian's redis-server package"):
            redis_binaries()
    finally:
        redis_binaries.cache_clear()


def test_a_restart_whose_port_another_server_took_moves_to_a_free_port(tmp_path: Path) -> None:
    def argv(port: int) -> list[str]:
        return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]

    node, squatter = Node(tmp_path, "node"), Node(tmp_path, "squatter")
    try:
        node.spawn(argv)
        node.wait_answers(time.monotonic() + 10)
        port = node.port
        node.kill()
        squatter.spawn(argv, port)  # a server that answers PING on the node's port
        squatter.wait_answers(time.monotonic() + 10)
        node.restart()
        assert node.port != port
        assert info(node, "server")["process_id"] == str(node.pid)
    finally:
        node.kill()
        squatter.kill()


def test_the_cluster_has_three_masters_with_a_replica_each_and_serves_every_slot(
    redis_cluster: LocalCluster,
) -> None:
    masters, replicas = redis_cluster.masters(), redis_cluster.replicas()
    assert len(masters) == 3 and len(replicas) == 3
    assert len(redis_cluster.nodes) == 6
    for node in redis_cluster.nodes:
        state = info(node, "cluster")
        assert state["cluster_state"] == "ok"
        assert state["cluster_slots_ok"] == str(SLOTS)
        ranges = redis_cluster.slots(node)  # CLUSTER SLOTS as this node sees it
        assert ranges[0].start == 0 and ranges[-1].end == SLOTS - 1
        assert all(a.end + 1 == b.start for a, b in itertools.pairwise(ranges))
        assert {r.master for r in ranges} == {m.port for m in masters}
    roles = redis_cluster.roles()
    assert sorted(roles[r.port][1] or 0 for r in replicas) == sorted(m.port for m in masters)
    for replica in replicas:
        assert info(replica, "replication")["master_link_status"] == "up"


async def test_sharded_pub_sub_goes_through_redis_pys_cluster_client(
    redis_cluster: LocalCluster,
) -> None:
    subscriber = RedisCluster.from_url(redis_cluster.url)
    publisher = RedisCluster.from_url(redis_cluster.url)
    channel = _key("channel")
    pubsub = subscriber.pubsub()
    try:
        await subscriber.initialize()  # ssubscribe needs the slot map, and won't load it
        await pubsub.ssubscribe(channel)
        async with asyncio.timeout(10):
            assert await publisher.spublish(channel, "hello") == 1  # one receiver reached
            while True:
                message = await pubsub.get_sharded_message(timeout=1.0)
                if message is not None and message["type"] == "smessage":
                    break
        assert message["data"] == b"hello"
        assert message["channel"] == channel.encode()
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
        await publisher.aclose()


async def test_a_cluster_refuses_a_transaction_over_two_slots(redis_cluster: LocalCluster) -> None:
    a, b = _key("a"), _key("b")
    assert key_slot(a.encode()) != key_slot(b.encode())
    node = redis_cluster.master_of(a)
    client = Redis(port=node.port)
    try:
        with pytest.raises(ResponseError, match="same slot"):
            await client.execute_command("MSET", a, "1", b, "2")  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()


async def test_killing_a_keys_master_promotes_its_replica_which_then_serves_the_key(
    private_cluster: Callable[[], LocalCluster],
) -> None:
    cluster = private_cluster()
    client = RedisCluster.from_url(cluster.url)
    try:
        await client.set("survivor", "before")
        cluster.wait_replicas()  # the write reached the replica: it must survive
        doomed = cluster.master_of("survivor")
        its_replica = next(
            port for port, (role, master) in cluster.roles().items() if master == doomed.port
        )
        promoted = await asyncio.to_thread(cluster.kill_master_of, "survivor")
        assert not doomed.alive()
        assert promoted.port == its_replica
        assert cluster.master_of("survivor") is promoted
        assert info(promoted, "replication")["role"] == "master"
        # The client made before the failover follows it (MOVED / a new slot map).
        assert await client.get("survivor") == b"before"
        await client.set("survivor", "after")
        with promoted.client() as direct:
            assert direct.get("survivor") == "after"
    finally:
        await client.aclose()


def test_the_sentinels_know_the_master_its_replica_and_each_other(
    redis_sentinel: LocalSentinel,
) -> None:
    assert len(redis_sentinel.sentinels) == 3
    assert redis_sentinel.check_ready() == ""
    for sentinel in redis_sentinel.sentinel_nodes:
        assert redis_sentinel.named_master(sentinel) == redis_sentinel.master.address
    assert info(redis_sentinel.replica, "replication")["master_port"] == str(
        redis_sentinel.master.port
    )
    assert redis_sentinel.master_url == f"redis://127.0.0.1:{redis_sentinel.master.port}/0"


async def test_a_failover_moves_the_master_and_a_sentinel_client_writes_to_the_new_one(
    private_sentinel: Callable[[], LocalSentinel],
) -> None:
    setup = private_sentinel()
    sentinel = Sentinel(setup.sentinels, socket_timeout=2.0)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(setup.service, socket_timeout=2.0)
    try:
        await client.set("survivor", "before")
        setup.wait_replicas()
        old = setup.master
        new = await asyncio.to_thread(setup.failover)
        assert new.address != old.address and not old.alive()
        assert await sentinel.discover_master(setup.service) == new.address
        # The client made before the failover asks the sentinels again.
        assert await client.get("survivor") == b"before"
        await client.set("survivor", "after")
        with new.client() as direct:
            assert direct.get("survivor") == "after"
        assert setup.master_url == new.url
        rejoined = await asyncio.to_thread(setup.restart_old_master)
        assert rejoined is old and setup.replica is old
        setup.wait_replicas()
        with old.client() as direct:
            assert direct.get("survivor") == "after"  # a replica of the new master
    finally:
        await client.aclose()
        for peer in sentinel.sentinels:
            await peer.aclose()
