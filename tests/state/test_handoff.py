"""Human handoff marks, on a real Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from core.state.handoff import Handoffs
from core.state.keys import ConversationKey, Keys

CONV = ConversationKey("slack", "T1", "C1", "1700.1")
OTHER = ConversationKey("slack", "T1", "C1", "1700.2")


async def test_hand_over_then_resume(redis: Redis, keys: Keys) -> None:
    handoffs = Handoffs(redis, keys)
    assert not await handoffs.is_handed_over(CONV)
    await handoffs.hand_over(CONV, quiet_minutes=0)
    assert await handoffs.is_handed_over(CONV)
    assert not await handoffs.is_handed_over(OTHER)
    assert await redis.ttl(keys.handoff(CONV)) == -1  # until resumed
    assert await handoffs.resume(CONV)
    assert not await handoffs.is_handed_over(CONV)
    assert not await handoffs.resume(CONV)


def test_a_single_redis_keeps_the_key_earlier_versions_wrote(keys: Keys) -> None:
    conversation = "{" + CONV.id + "}" if keys.cluster else CONV.id  # its slot, on a cluster
    assert keys.handoff(CONV) == f"{keys.prefix}handoff:{conversation}"


async def test_quiet_time_expires(redis: Redis, keys: Keys) -> None:
    handoffs = Handoffs(redis, keys)
    await handoffs.hand_over(CONV, quiet_minutes=0.01)  # 0.6 s
    assert await handoffs.is_handed_over(CONV)
    for _ in range(40):
        if not await handoffs.is_handed_over(CONV):
            break
        await asyncio.sleep(0.05)
    assert not await handoffs.is_handed_over(CONV)
