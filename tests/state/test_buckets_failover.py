"""Shared budgets through a failover: the master holding a scope dies (a cluster
master, or the master Sentinel watches), each on a topology of the test's own.

Replies must keep moving (per-process budgets, as for any outage, each call
bounded), the outage must count once, and the budgets must be shared again once
the promoted replica serves the scope, not before (flapping) nor never.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import pytest

from core.reply.budget import Limit, LimitTable
from core.state.buckets import RedisBudget
from core.state.keys import Keys
from core.state.topology import RedisClient, Topology, connect_cluster, connect_sentinel
from tests.redis_servers import LocalCluster, LocalSentinel
from tests.state.pausable import MARGIN

LOGGER = "core.state.buckets"


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
async def test_a_failover_is_one_outage_and_budgets_are_shared_again_after_it(
    kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    client: RedisClient
    fail: Callable[[], object]
    if kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("private_cluster")()
        client = connect_cluster(cluster.url)
    else:
        sentinel: LocalSentinel = request.getfixturevalue("private_sentinel")()
        client = connect_sentinel(Topology(sentinels=tuple(sentinel.sentinels)))
    keys = Keys("failover:", cluster=kind == "cluster")
    budget = RedisBudget(client, keys, LimitTable({"s": Limit(100, 1)}), retry_interval=0.05)
    if kind == "cluster":
        fail = functools.partial(cluster.kill_master_of, keys.bucket("s"))
    else:
        fail = sentinel.failover
    try:
        await budget.acquire("s")
        slowest = 0.0
        with caplog.at_level(logging.INFO, logger=LOGGER):
            failing = asyncio.ensure_future(asyncio.to_thread(fail))
            while not failing.done():  # a reply's updates, all through the failover
                started = time.monotonic()
                await budget.acquire("s")
                slowest = max(slowest, time.monotonic() - started)
            await failing
            async with asyncio.timeout(10):  # the probe finds the promoted master
                while budget.degraded:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await budget.acquire("s")
        assert slowest < budget.timeout + MARGIN
        assert await client.exists(keys.bucket("s")) == 1  # on the promoted master
        said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
        assert [level for level, _ in said] == [logging.WARNING, logging.INFO], said
        assert "per-process" in said[0][1] and "back" in said[1][1]
    finally:
        await budget.aclose()
        await client.aclose()
