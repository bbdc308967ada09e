"""Claims that wait for a replica survive the master's death (``core.state.replicated``).

Real servers: a Sentinel set-up and a cluster of the test's own, whose master is
killed right after the claims; the promoted replica must still refuse them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import pytest

from core.state.dedupe import Dedupe
from core.state.keys import ConversationKey, Keys
from core.state.locks import ConversationLocks
from core.state.replicated import ReplicatedWrites
from core.state.topology import Topology, connect_to
from tests.redis_fixtures import SESSION_PREFIX
from tests.redis_servers import LocalCluster, LocalSentinel, Node
from tests.state.pausable import PausableRedis

CLAIMS = 200


def _waits(node: Node) -> int:
    """WAIT commands the node has run (``INFO commandstats``)."""
    with node.client() as client:
        stats = client.info("commandstats").get("cmdstat_wait", {})
    return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
async def test_claims_and_lock_grabs_waited_for_survive_a_failover(
    kind: str,
    private_sentinel: Callable[[], LocalSentinel],
    private_cluster: Callable[[], LocalCluster],
) -> None:
    keys = Keys(f"replicated-{uuid.uuid4().hex[:8]}:", cluster=kind == "cluster")
    if kind == "sentinel":
        sentinel = private_sentinel()
        topology = Topology(sentinels=tuple(sentinel.sentinels), service=sentinel.service)
    else:
        cluster = private_cluster()
        topology = Topology(url=cluster.url, cluster=True)
    client = connect_to(topology)
    await client.ping()
    writes = ReplicatedWrites(client, replicas=1, timeout=0.5)
    dedupe = Dedupe(client, keys, writes=writes)
    locks = ConversationLocks(client, keys, writes=writes, ttl=60)
    conversation = ConversationKey("slack", "T1", "C1", "1.0")
    try:
        warm = await locks.acquire(ConversationKey("slack", "T1", "C0", ""), wait=0)
        assert warm is not None  # the scripts are loaded now: a first run sends two WAITs
        await warm.release()
        masters = cluster.masters() if kind == "cluster" else [sentinel.master]
        before = {node.port: _waits(node) for node in masters}
        assert all([await dedupe.claim(f"ev{i}") for i in range(CLAIMS)])
        lease = await locks.acquire(conversation, wait=0)
        assert lease is not None and lease.shared
        # Each claim and the grab sent one WAIT, on the connection (so the node)
        # that took the write: the master of the key's slot.
        owners = [keys.dedupe(f"ev{i}") for i in range(CLAIMS)] + [keys.lock(conversation)]
        sent = {node.port: _waits(node) - before[node.port] for node in masters}
        if kind == "cluster":
            wanted = {node.port: 0 for node in masters}
            for key in owners:
                wanted[cluster.master_of(key).port] += 1
        else:
            wanted = {sentinel.master.port: len(owners)}
        assert sent == wanted
        # Killed the moment the last claim was acknowledged: only WAIT got them across.
        if kind == "sentinel":
            await asyncio.to_thread(sentinel.failover)
        else:
            await asyncio.to_thread(cluster.kill_master_of, keys.lock(conversation))
        again = [await dedupe.claim(f"ev{i}") for i in range(CLAIMS)]
        assert not any(again), f"{sum(again)} claims forgotten by the failover"
        assert await locks.acquire(conversation, wait=0) is None  # still held
    finally:
        await client.aclose()


async def test_without_replicas_a_claim_warns_once_and_stops_waiting(
    pausable: PausableRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """One server of the test's own, nothing replicating it: WAIT would cost every
    claim its whole timeout; after the first, claims go out without it for a while."""
    keys = Keys(f"replicated-{uuid.uuid4().hex[:8]}:")
    client = connect_to(Topology(pausable.url))
    writes = ReplicatedWrites(client, replicas=1, timeout=0.2)
    dedupe = Dedupe(client, keys, writes=writes)
    try:
        with caplog.at_level(logging.WARNING, "core.state.replicated"):
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert all([await dedupe.claim(f"ev{i}") for i in range(20)])
            took = loop.time() - started
        assert took < 0.2 * 3, f"{took:.2f} s for 20 claims: WAIT was not skipped"
        warned = [r for r in caplog.records if "acknowledged" in r.getMessage()]
        assert len(warned) == 1
    finally:
        for i in range(20):
            await client.delete(keys.dedupe(f"ev{i}"))
        await client.aclose()


async def test_a_cluster_clients_first_command_can_be_a_claim(
    redis_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that has sent nothing yet has no slot map: the claim must learn it,
    not fail over to this process's memory (a claim other replicas can't see)."""
    keys = Keys(f"{SESSION_PREFIX}replicated-{uuid.uuid4().hex[:8]}:", cluster=True)
    client = connect_to(Topology(url=redis_cluster.url, cluster=True))
    dedupe = Dedupe(client, keys, writes=ReplicatedWrites(client, replicas=1, timeout=0.5))
    try:
        with caplog.at_level(logging.WARNING, "core.state.dedupe"):
            assert await dedupe.claim("ev-first")
        assert not [r for r in caplog.records if "per-process" in r.getMessage()]
        assert await client.exists(keys.dedupe("ev-first")) == 1
    finally:
        await client.delete(keys.dedupe("ev-first"))
        await client.aclose()
