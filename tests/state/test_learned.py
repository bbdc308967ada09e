"""Learnt limits and the invalid-request count, shared through a real Redis:
what one replica learns or counts, every replica paces by."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from core.clock import FakeClock
from core.reply.budget import Limit, LimitTable, Window
from core.state.buckets import RedisBudget
from core.state.invalid import InvalidRequests
from core.state.keys import Keys
from core.state.learned import AdaptiveLimits, LearnedLimits, is_tighter, slowed
from tests.state.stepped import SteppedClock
from tests.state.test_buckets import max_in_window

CHANNEL = "discord:channel:42"


def test_a_learnt_limit_counts_only_when_it_lets_fewer_calls_through() -> None:
    configured = Limit(4, 5)  # assumes Discord's 5 per 5 s, one call under
    assert is_tighter(Limit(2, 5), configured)  # Discord said 3
    assert not is_tighter(Limit(4, 5), configured)  # Discord said 5: what we assumed
    assert not is_tighter(Limit(6, 5), configured)  # looser: never loosens
    assert is_tighter(Limit(4, 1), Limit(4, 1, burst=2))  # a burst admits 5 in 1 s
    assert is_tighter(Limit(1, 1), None)
    assert not is_tighter(Limit(3, 60), Window(2, 60))


def test_slowed_halves_counts_and_bursts_never_below_one() -> None:
    assert slowed(Limit(4, 5), 2.0) == Limit(2, 5)
    assert slowed(Limit(40, 1, burst=10), 2.0) == Limit(20, 1, burst=5)
    assert slowed(Window(19, 61), 2.0) == Window(9, 61)
    assert slowed(Window(1, 61), 2.0) == Window(1, 61)


async def test_adaptive_limits_tighten_slow_down_and_never_loosen(redis: Redis, keys: Keys) -> None:
    learned = LearnedLimits(redis, keys, "discord")
    table = AdaptiveLimits(
        LimitTable({"discord:channel:*": Limit(4, 5), "slack:*": Limit(45, 60)}), learned
    )
    assert table.lookup(CHANNEL) == Limit(4, 5)
    await learned.record(CHANNEL, "send", Limit(2, 5))
    assert table.lookup(CHANNEL) == Limit(2, 5)
    assert table.lookup("discord:channel:43") == Limit(4, 5)  # only where it was learnt
    await learned.record(CHANNEL, "edit", Limit(6, 5))  # another bucket, looser: ignored
    assert table.lookup(CHANNEL) == Limit(2, 5)
    table.slow_down("discord:", 2.0)
    assert table.lookup(CHANNEL) == Limit(1, 5)
    assert table.lookup("discord:channel:43") == Limit(2, 5)
    assert table.lookup("slack:T1:chat.update") == Limit(45, 60)  # not Discord's
    table.slow_down("discord:", 1.0)
    await learned.record(CHANNEL, "send", None)  # the bucket no longer reports it
    await learned.record(CHANNEL, "edit", None)
    assert table.lookup(CHANNEL) == Limit(4, 5)


async def test_what_one_replica_learns_every_replica_paces_by_until_it_expires(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    a = LearnedLimits(redis, keys, "discord", ttl=0.5)
    b = LearnedLimits(second_client, keys, "discord", ttl=0.5)
    await a.record(CHANNEL, "send", Limit(2, 5))
    assert b.get(CHANNEL) is None  # not before it reads Redis
    await b.refresh()
    assert b.get(CHANNEL) == Limit(2, 5)
    assert b.entries() == {CHANNEL: Limit(2, 5)}

    async with asyncio.timeout(3):  # real time: the entry's expiry is on Redis's clock
        while True:
            await b.refresh()
            if b.get(CHANNEL) is None:
                break
            await asyncio.sleep(0.05)
    assert await redis.exists(keys.learned_limits("discord")) == 0  # pruned, then expired


async def test_a_forgotten_bucket_is_forgotten_by_every_replica(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    a = LearnedLimits(redis, keys, "discord")
    b = LearnedLimits(second_client, keys, "discord")
    await a.record(CHANNEL, "send", Limit(2, 5))
    await a.record(CHANNEL, "edit", Limit(3, 5))
    await b.refresh()
    assert b.get(CHANNEL) == Limit(2, 5)  # the tightest bucket binds the scope
    await a.record(CHANNEL, "send", None)
    await b.refresh()
    assert b.get(CHANNEL) == Limit(3, 5)


async def test_the_same_answer_again_costs_no_redis_write(redis: Redis, keys: Keys) -> None:
    learned = LearnedLimits(redis, keys, "discord", ttl=60)
    await learned.record(CHANNEL, "send", Limit(2, 5))
    await redis.delete(keys.learned_limits("discord"))
    await learned.record(CHANNEL, "send", Limit(2, 5))  # unchanged, young: kept locally only
    assert await redis.exists(keys.learned_limits("discord")) == 0
    await learned.record(CHANNEL, "send", Limit(1, 5))  # changed: written
    assert await redis.exists(keys.learned_limits("discord")) == 1


async def test_two_budgets_pace_a_scope_by_the_limit_one_of_them_learnt(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    """Replicas' budgets share one GCRA state; once both read the learnt limit, the
    scope's calls, from either, never exceed it."""
    clock = SteppedClock()
    budgets: list[RedisBudget] = []
    stores: list[LearnedLimits] = []
    for client in (redis, second_client):
        store = LearnedLimits(client, keys, "discord", clock=clock)
        table = AdaptiveLimits(LimitTable({"discord:channel:*": Limit(4, 1, burst=2)}), store)
        budgets.append(RedisBudget(client, keys, table, clock=clock, server_time=False))
        stores.append(store)
    await stores[0].record(CHANNEL, "send", Limit(2, 1))  # Discord said 3 per second
    await stores[1].refresh()
    times: list[float] = []

    async def calls(budget: RedisBudget) -> None:
        for _ in range(6):
            await budget.acquire(CHANNEL)
            times.append(clock.now())

    await clock.drive([asyncio.ensure_future(calls(budget)) for budget in budgets])
    assert len(times) == 12
    assert max_in_window(times, 1.0) <= 2
    assert max(times) == pytest.approx(5.5)  # 12 calls, one every half second


async def test_invalid_requests_add_up_across_replicas_over_a_sliding_window(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    clock = FakeClock(1000.0)
    a = InvalidRequests(redis, keys, "discord", window=60, slot=10, clock=clock)
    b = InvalidRequests(second_client, keys, "discord", window=60, slot=10, clock=clock)
    assert await a.count() == 0
    assert await a.add() == 1
    assert await b.add(2) == 3
    await clock.advance(30)
    assert await b.add() == 4
    assert await a.count() == 4
    assert 0 < await redis.pttl(keys.invalid_requests("discord")) <= 61_000  # one window
    await clock.advance(35)  # the first three left the window
    assert await a.count() == 1
    await clock.advance(60)
    assert await b.count() == 0
    assert await redis.exists(keys.invalid_requests("discord")) == 0  # every slot pruned
