"""Per-conversation locks: owner-only release and extend, expiry, and the
"newer message waits, in arrival order" policy."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from core.state.connection import connect
from core.state.keys import ConversationKey, Keys
from core.state.locks import ConversationLocks, Lease
from tests.state.pausable import MARGIN, PausableRedis, settled, timed

CONV = ConversationKey("discord", "G1", "C1", "T1")


def locks(redis: Redis, keys: Keys, ttl: float = 5.0, timeout: float = 1.0) -> ConversationLocks:
    return ConversationLocks(redis, keys, ttl=ttl, poll=0.01, timeout=timeout)


async def until(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 5.0) -> None:
    """Wait, bounded, for an async condition to become true."""
    for _ in range(int(seconds / 0.005)):
        if await condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting until {what}")


async def test_one_holder_at_a_time_across_replicas(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    replica_a, replica_b = locks(redis, keys), locks(second_client, keys)
    lease = await replica_a.acquire(CONV, wait=0)
    assert lease is not None
    assert await replica_b.acquire(CONV, wait=0) is None
    assert await replica_b.acquire(ConversationKey("discord", "G1", "C1", "T2"), wait=0)
    assert await lease.release() is True
    assert await replica_b.acquire(CONV, wait=0) is not None


async def test_only_the_owner_can_release_or_extend(redis: Redis, keys: Keys) -> None:
    conversation_locks = locks(redis, keys)
    lease = await conversation_locks.acquire(CONV, wait=0)
    assert lease is not None
    impostor = Lease(conversation_locks, CONV, "not-the-token")
    assert await impostor.release() is False
    assert await impostor.extend() is False
    assert await redis.get(keys.lock(CONV)) == lease.token.encode()
    assert await conversation_locks.acquire(CONV, wait=0) is None
    assert await lease.extend() is True
    assert await lease.release() is True
    assert await lease.release() is False  # already free: nothing to do


async def test_an_expired_holder_cannot_free_the_next_holders_lock(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    stale = await locks(redis, keys, ttl=0.05).acquire(CONV, wait=0)
    assert stale is not None
    await until(lambda: _free(redis, keys), "the lock expires")
    fresh = await locks(second_client, keys).acquire(CONV, wait=0)
    assert fresh is not None
    assert await stale.release() is False
    assert await stale.extend() is False
    assert await second_client.get(keys.lock(CONV)) == fresh.token.encode()


async def _free(redis: Redis, keys: Keys) -> bool:
    return not await redis.exists(keys.lock(CONV))


async def test_newer_messages_wait_and_go_in_arrival_order(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    replicas = [locks(redis, keys), locks(second_client, keys)]
    first = await replicas[0].acquire(CONV, wait=0)
    assert first is not None
    order: list[str] = []
    released = {name: asyncio.Event() for name in "BCD"}

    async def message(name: str, replica: ConversationLocks) -> None:
        lease = await replica.acquire(CONV, wait=10)
        assert lease is not None
        async with lease:
            order.append(name)
            await released[name].wait()

    queue = keys.lock_queue(CONV)
    tasks = []
    for n, name in enumerate("BCD"):  # each joins the line before the next arrives
        tasks.append(asyncio.create_task(message(name, replicas[n % 2])))
        await until(functools.partial(_queued, redis, queue, n + 1), f"{name} queues")
    await first.release()
    for name in "BCD":
        await until(functools.partial(_has, order, name), f"{name} holds the lock")
        assert order[-1] == name
        released[name].set()
    await asyncio.gather(*tasks)
    assert order == ["B", "C", "D"]
    assert await redis.exists(queue) == 0


async def _queued(redis: Redis, queue: str, n: int) -> bool:
    return bool(await redis.llen(queue) == n)


async def _has(order: list[str], name: str) -> bool:
    return name in order


async def test_a_waiter_that_gives_up_leaves_the_line(redis: Redis, keys: Keys) -> None:
    conversation_locks = locks(redis, keys)
    holder = await conversation_locks.acquire(CONV, wait=0)
    assert holder is not None
    assert await conversation_locks.acquire(CONV, wait=0.1) is None
    assert await redis.llen(keys.lock_queue(CONV)) == 0
    task = asyncio.create_task(conversation_locks.acquire(CONV, wait=10))
    await until(lambda: _queued(redis, keys.lock_queue(CONV), 1), "the waiter queues")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await redis.llen(keys.lock_queue(CONV)) == 0
    await holder.release()
    assert await conversation_locks.acquire(CONV, wait=0) is not None


async def test_a_dead_waiter_does_not_block_the_line(redis: Redis, keys: Keys) -> None:
    # A replica died while waiting: its token heads the line, its liveness long expired.
    await redis.rpush(keys.lock_queue(CONV), "dead-token")
    await redis.hset(keys.lock_waiters(CONV), "dead-token", "1")
    lease = await locks(redis, keys).acquire(CONV, wait=0)
    assert lease is not None
    assert await redis.llen(keys.lock_queue(CONV)) == 0


async def test_a_held_lease_outlives_its_ttl_and_frees_on_exit(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    # A TTL long enough that a loaded CI machine's scheduling hiccups don't expire it.
    lease = await locks(redis, keys, ttl=0.5).acquire(CONV, wait=0)
    assert lease is not None
    other = locks(second_client, keys)
    async with lease:
        for _ in range(16):  # 1.6 s: more than three TTLs
            await asyncio.sleep(0.1)
            assert await other.acquire(CONV, wait=0) is None
        assert lease.lost is False
    assert await other.acquire(CONV, wait=0) is not None


async def test_a_lease_that_loses_its_lock_says_so(redis: Redis, keys: Keys) -> None:
    lease = await locks(redis, keys, ttl=0.15).acquire(CONV, wait=0)
    assert lease is not None
    async with lease:
        await redis.set(keys.lock(CONV), "someone-else")  # e.g. it expired during a stall
        await asyncio.wait_for(lease.wait_lost(), 2.0)
        assert lease.lost is True
        assert await lease.reacquire() is False  # someone else's: left alone
        assert lease.lost is True
    assert await redis.get(keys.lock(CONV)) == b"someone-else"  # not released by us


async def test_a_lease_whose_key_vanished_takes_it_back_and_keeps_it(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    lease = await locks(redis, keys, ttl=0.3).acquire(CONV, wait=0)
    assert lease is not None
    other = locks(second_client, keys)
    async with lease:
        await redis.delete(keys.lock(CONV))  # Redis lost it (a failover, a flush)
        await asyncio.wait_for(lease.wait_lost(), 2.0)
        assert lease.lost is True
        assert await lease.extend() is False  # a lost lease is taken back, not extended
        assert await lease.reacquire() is True
        assert lease.lost is False and lease.shared is True
        assert await redis.get(keys.lock(CONV)) == lease.token.encode()
        for _ in range(10):  # 1 s: more than three TTLs, kept all along
            await asyncio.sleep(0.1)
            assert await other.acquire(CONV, wait=0) is None
        assert lease.lost is False
    assert await redis.exists(keys.lock(CONV)) == 0


async def test_a_lease_nobody_keeps_is_lost_after_its_ttl(redis: Redis, keys: Keys) -> None:
    lease = await locks(redis, keys, ttl=0.1).acquire(CONV, wait=0)
    assert lease is not None
    assert lease.lost is False
    await until(lambda: _free(redis, keys), "the lock expires")
    assert lease.lost is True
    assert await lease.reacquire() is True  # free: ours again
    assert lease.lost is False
    assert await lease.release() is True


# With Redis paused (a private server: ``pausable``). Each look at Redis costs
# at most BOUND, and a reply still gets a lease, held in this process only.

BOUND = 0.2


def within_bound(seconds: float, at_least: float = BOUND) -> bool:
    return at_least - 0.01 <= seconds < at_least + MARGIN


@pytest.fixture
async def paused_client(pausable: PausableRedis) -> AsyncIterator[Redis]:
    """A client of the private server, with a warm connection as in service."""
    client = connect(pausable.url)
    try:
        assert await client.ping() is True
        yield client
    finally:
        await client.aclose()


async def test_without_an_answer_a_reply_still_gets_a_lease_for_this_process(
    pausable: PausableRedis, paused_client: Redis, keys: Keys
) -> None:
    replica = locks(paused_client, keys, ttl=5.0, timeout=BOUND)
    held = await replica.acquire(CONV, wait=0)
    assert held is not None and held.shared is True
    other = ConversationKey("discord", "G1", "C1", "T2")
    with pausable.paused():
        lease, seconds = await timed(replica.acquire(other, wait=0))
        assert isinstance(lease, Lease) and within_bound(seconds)
        assert lease.shared is False and lease.lost is False
        # This process already runs a reply in CONV: a newer message waits for it,
        # Redis or not, and gives up after its wait (plus one bound per look).
        busy, seconds = await timed(replica.acquire(CONV, wait=0.3))
        assert busy is None and 0.3 <= seconds < 0.3 + BOUND + MARGIN
        extended, seconds = await timed(held.extend())
        assert isinstance(extended, TimeoutError) and within_bound(seconds)
        assert held.lost is False  # unreachable for less than the TTL
        released, seconds = await timed(held.release())
        assert isinstance(released, TimeoutError) and within_bound(seconds)
        # Released here: the next message gets the conversation at once.
        after, seconds = await timed(replica.acquire(CONV, wait=0))
        assert isinstance(after, Lease) and after.shared is False and within_bound(seconds)
    await settled(paused_client)
    # Redis answers again: both per-process leases take their locks there, the
    # second one although the lease released before it is still in Redis.
    assert await paused_client.get(keys.lock(CONV)) == held.token.encode()
    assert await lease.extend() is True and lease.shared is True
    assert await after.extend() is True and after.shared is True
    assert await paused_client.get(keys.lock(other)) == lease.token.encode()
    assert await paused_client.get(keys.lock(CONV)) == after.token.encode()
    assert await lease.release() is True and await after.release() is True
    assert await replica.acquire(CONV, wait=0) is not None


async def test_a_kept_lease_is_lost_once_redis_is_away_for_its_ttl_and_taken_back_after(
    pausable: PausableRedis, paused_client: Redis, keys: Keys
) -> None:
    ttl = 0.6
    loop = asyncio.get_running_loop()
    asked = loop.time()
    lease = await locks(paused_client, keys, ttl=ttl, timeout=BOUND).acquire(CONV, wait=0)
    assert lease is not None
    acquired = loop.time()
    async with lease:
        with pausable.paused():
            await asyncio.wait_for(lease.wait_lost(), ttl + 5)
            lost = loop.time()
            assert lease.lost is True
            # Not before the key could have expired; noticed within one look after.
            assert asked + ttl <= lost < acquired + ttl + BOUND + MARGIN
            retaken, seconds = await timed(lease.reacquire())
            assert retaken is False and within_bound(seconds)
            assert lease.lost is True
        await settled(paused_client)
        assert await paused_client.exists(keys.lock(CONV)) == 0  # it did expire
        assert await lease.reacquire() is True
        assert lease.lost is False and lease.shared is True
        assert await paused_client.get(keys.lock(CONV)) == lease.token.encode()
    assert await paused_client.exists(keys.lock(CONV)) == 0


async def test_a_per_process_lease_learns_when_redis_returns_that_another_reply_has_the_lock(
    pausable: PausableRedis, paused_client: Redis, keys: Keys
) -> None:
    """The issue's two replies at once: the conversation was another replica's
    when Redis went away; the reply answered meanwhile is told once Redis is back."""
    elsewhere = connect(pausable.url)
    try:
        theirs = await locks(elsewhere, keys, ttl=30.0).acquire(CONV, wait=0)
        assert theirs is not None
        with pausable.paused():
            replica = locks(paused_client, keys, ttl=0.6, timeout=BOUND)
            ours, seconds = await timed(replica.acquire(CONV, wait=0))
        assert isinstance(ours, Lease) and within_bound(seconds)
        assert ours.shared is False
        async with ours:
            await asyncio.wait_for(ours.wait_lost(), 5.0)
            assert ours.lost is True and ours.shared is False
            assert await ours.reacquire() is False
        assert await elsewhere.get(keys.lock(CONV)) == theirs.token.encode()  # untouched
    finally:
        await elsewhere.aclose()


async def test_a_waiter_that_saw_the_lock_held_waits_out_its_ttl_before_going_alone(
    pausable: PausableRedis, paused_client: Redis, keys: Keys
) -> None:
    ttl = 0.8
    elsewhere = connect(pausable.url)
    try:
        theirs = await locks(elsewhere, keys, ttl=ttl).acquire(CONV, wait=0)
        assert theirs is not None
        start = asyncio.get_running_loop().time()
        waiter = asyncio.create_task(
            locks(paused_client, keys, ttl=ttl, timeout=BOUND).acquire(CONV, wait=10)
        )
        await until(lambda: _queued(elsewhere, keys.lock_queue(CONV), 1), "the waiter queues")
        with pausable.paused():
            lease = await asyncio.wait_for(waiter, 10)
            took = asyncio.get_running_loop().time() - start
        assert lease is not None and lease.shared is False
        # Redis said "held" at least once after the start: the holder's key could
        # not expire before a TTL from then.
        assert ttl <= took < ttl + 2 * BOUND + MARGIN
    finally:
        await elsewhere.aclose()
