"""Per-conversation locks: owner-only release and extend, expiry, and the
"newer message waits, in arrival order" policy."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from core.state.keys import ConversationKey, Keys
from core.state.locks import ConversationLocks, Lease

CONV = ConversationKey("discord", "G1", "C1", "T1")


def locks(redis: Redis, keys: Keys, ttl: float = 5.0) -> ConversationLocks:
    return ConversationLocks(redis, keys, ttl=ttl, poll=0.01)


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
        assert not lease.lost.is_set()
    assert await other.acquire(CONV, wait=0) is not None


async def test_a_lease_that_loses_its_lock_says_so(redis: Redis, keys: Keys) -> None:
    lease = await locks(redis, keys, ttl=0.15).acquire(CONV, wait=0)
    assert lease is not None
    async with lease:
        await redis.set(keys.lock(CONV), "someone-else")  # e.g. it expired during a stall
        await asyncio.wait_for(lease.lost.wait(), 2.0)
    assert await redis.get(keys.lock(CONV)) == b"someone-else"  # not released by us
