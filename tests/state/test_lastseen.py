"""Per-channel cursors of the newest message seen, on a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from core.state.connection import connect
from core.state.keys import Keys
from core.state.lastseen import LastSeen
from tests.state.pausable import MARGIN, PausableRedis, settled, timed

# Snowflake-sized ids: beyond a double's 53 bits, where a float comparison is wrong.
OLD = "1200000000000000201"
NEW = "1200000000000000202"


async def cursors(seen: LastSeen, partition: str = "0") -> dict[str, str]:
    return {s.channel: s.message for s in await seen.recent("discord", partition, 100)}


async def test_a_cursor_only_moves_forward_and_partitions_are_apart(
    redis: Redis, keys: Keys
) -> None:
    seen = LastSeen(redis, keys)
    await seen.advance("discord", "0", {"c1": NEW, "c2": "9"})
    await seen.advance("discord", "0", {"c1": OLD, "c2": "10"})  # c1: a late write
    await seen.advance("discord", "1", {"c3": "5"})
    assert float(OLD) == float(NEW)  # why ids are never compared as numbers
    assert await cursors(seen) == {"c1": NEW, "c2": "10"}
    assert await cursors(seen, "1") == {"c3": "5"}
    await seen.forget("discord", "0", "c1")
    assert await cursors(seen) == {"c2": "10"}
    with pytest.raises(ValueError, match="decimal"):
        await seen.advance("discord", "0", {"c1": "12ab"})


async def test_most_recently_active_first_and_at_most_the_limit(redis: Redis, keys: Keys) -> None:
    seen = LastSeen(redis, keys)
    for channel in ("a", "b", "c"):
        await seen.advance("discord", "0", {channel: "1"})
        await asyncio.sleep(0.01)  # Redis's clock (ms) tells them apart
    assert [s.channel for s in await seen.recent("discord", "0", 2)] == ["c", "b"]


async def test_it_stays_small_and_forgets_on_its_own(redis: Redis, keys: Keys) -> None:
    seen = LastSeen(redis, keys, window=0.3, max_channels=3)
    for channel in ("a", "b", "c", "d", "e"):
        await seen.advance("discord", "0", {channel: "1"})
        await asyncio.sleep(0.01)
    key = keys.last_seen("discord", "0")
    assert sorted(await cursors(seen)) == ["c", "d", "e"]  # the least recent went
    assert await redis.hlen(key) == 3
    assert 0 < await redis.pttl(key) <= 300
    await asyncio.sleep(0.15)
    await seen.advance("discord", "0", {"e": "2"})
    await asyncio.sleep(0.2)
    assert await cursors(seen) == {"e": "2"}  # c and d are past the window
    for _ in range(40):  # then the whole hash expires
        if not await redis.exists(key):
            break
        await asyncio.sleep(0.05)
    assert not await redis.exists(key)


async def test_a_paused_redis_costs_one_bound(pausable: PausableRedis, keys: Keys) -> None:
    client = connect(pausable.url)
    try:
        seen = LastSeen(client, keys, timeout=0.2)
        await seen.advance("discord", "0", {"c": "1"})
        with pausable.paused():
            write, waited = await timed(seen.advance("discord", "0", {"c": "2"}))
            assert isinstance(write, TimeoutError) and 0.19 <= waited < 0.2 + MARGIN
            read, waited = await timed(seen.recent("discord", "0", 10))
            assert isinstance(read, TimeoutError) and 0.19 <= waited < 0.2 + MARGIN
        await settled(client)
        # A write that timed out may still be applied once Redis runs again.
        assert (await cursors(seen))["c"] in ("1", "2")
    finally:
        await client.aclose()
