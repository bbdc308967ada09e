"""A cluster master dying is an outage for the whole in-flight registry.

The streaming writes of every reply ride in shared round trips
(``core.state.batch``), which fail as one while any master is dead, so the
heartbeats of replies in *surviving* partitions miss the outage too. A sweeper
that claimed those partitions meanwhile would finalise live replies (or answer
their messages anew: a duplicate). Real cluster of the test's own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest

from core.state.connection import REDIS_FAILURES
from core.state.inflight import InflightRecord, InflightRegistry, MessageRecord
from core.state.keys import Keys
from core.state.topology import Topology, connect_to
from tests.redis_fixtures import SESSION_PREFIX
from tests.redis_servers import LocalCluster

TIMEOUT = 0.5


def _reply_in(keys: Keys, partition: int) -> str:
    """A reply id the registry files under ``partition``."""
    return next(f"r{i}" for i in range(10_000) if keys.inflight_partition(f"r{i}") == partition)


async def test_a_dead_master_holds_back_the_sweep_of_every_partition(
    private_cluster: Callable[[], LocalCluster],
) -> None:
    cluster = private_cluster()
    keys = Keys(f"{SESSION_PREFIX}failover-{uuid.uuid4().hex[:8]}:", cluster=True)

    def master_port(partition: int) -> int:
        return cluster.master_of(keys.inflight_beats("slack", partition)).port

    # The live reply's partition is claimed before the dying one's, on another master.
    dying = max(p for p in range(keys.inflight_partitions) if master_port(p) != master_port(0))
    live = _reply_in(keys, 0)
    client = connect_to(Topology(url=cluster.url, cluster=True))
    sweeper = InflightRegistry(client, keys, heartbeat=0.05, timeout=TIMEOUT)
    sweeper.write_timeout = 1.0
    finalised: list[str] = []

    async def finalise(record: InflightRecord) -> None:
        finalised.append(record.reply_id)

    async def sweep() -> int:
        return await sweeper.sweep({"slack": finalise})

    try:
        assert await sweep() == 0  # loads the claim script, as a running sweeper has
        # A live reply whose heartbeats are failing: its deadline is already past.
        record = InflightRecord(
            live, "slack", messages=(MessageRecord({"ts": "1"}, "partial"),), started=time.time()
        )
        await client.zadd(keys.inflight_beats("slack", 0), {live: 0})
        await client.hset(keys.inflight_records("slack", 0), live, record.to_json())
        doomed = cluster.master_of(keys.inflight_beats("slack", dying))
        failover = asyncio.create_task(
            asyncio.to_thread(cluster.kill_master_of, keys.inflight_beats("slack", dying))
        )
        for _ in range(200):
            if not doomed.alive():
                break
            await asyncio.sleep(0.01)
        assert not doomed.alive()
        with pytest.raises(REDIS_FAILURES):
            await sweep()
        assert finalised == []  # partition 0 answers, but was not claimed
        await failover
        # The cluster answers again: owners get a whole timeout to beat first.
        for _ in range(50):
            try:
                assert await sweep() == 0
                break
            except REDIS_FAILURES:  # our slot map still names the dead master
                await asyncio.sleep(0.1)
        back = time.monotonic()
        assert finalised == []
        # This owner never beats again: after the quiet timeout it is an orphan.
        while not finalised and time.monotonic() - back < 5:
            await sweep()
            await asyncio.sleep(0.05)
        assert finalised == [live]
        assert time.monotonic() - back >= TIMEOUT * 0.9
    finally:
        async for key in client.scan_iter(match=keys.prefix + "*"):
            await client.delete(key)
        await client.aclose()
