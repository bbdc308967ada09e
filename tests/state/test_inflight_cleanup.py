"""Replies ending together each forget their own in-flight record; a backlog
left by an outage is retried by one pass at a time, not by every reply that
ends (bench/production.py found the clean-up quadratic at 2,000 replies)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from core.state.inflight import InflightRecord, InflightRegistry
from core.state.keys import Keys


async def test_replies_ending_together_forget_their_own_and_the_backlog_once(
    redis: Redis, keys: Keys
) -> None:
    registry = InflightRegistry(redis, keys, heartbeat=0.05, timeout=0.3)
    forgotten: list[str] = []
    forget = registry._forget

    async def counting(platform: str, reply_id: str) -> None:
        forgotten.append(reply_id)
        await forget(platform, reply_id)

    registry._forget = counting  # type: ignore[method-assign]
    # An outage left 50 finished replies unforgotten.
    for n in range(50):
        registry._unsettled[f"old{n}"] = "slack"

    async def reply(n: int) -> None:
        async with registry.track(InflightRecord(f"r{n}", "slack", {"ts": str(n)})) as tracker:
            tracker.settled = True

    await asyncio.gather(*(reply(n) for n in range(100)))
    assert await registry.flush(within=5.0)
    own = [r for r in forgotten if r.startswith("r")]
    backlog = [r for r in forgotten if r.startswith("old")]
    assert sorted(own) == sorted(f"r{n}" for n in range(100))  # each its own, once
    assert sorted(backlog) == sorted(f"old{n}" for n in range(50))  # the backlog, once
    for partition in range(keys.inflight_partitions):  # on a cluster, each of them
        assert not await redis.hlen(keys.inflight_records("slack", partition))
