"""Writes that ride along with the next round trip (``core.state.batch``): the
in-flight records of streaming replies, carried by budget acquires. Real Redis."""

from __future__ import annotations

import asyncio
import gc

import pytest
from redis.asyncio import Redis

from core.reply.budget import Limit, LimitTable
from core.state.batch import WriteBatch
from core.state.buckets import RedisBudget
from core.state.connection import connect
from core.state.inflight import InflightRecord, InflightRegistry
from core.state.keys import ConversationKey, Keys
from core.state.locks import ConversationLocks
from tests.state.pausable import PausableRedis

SET = """redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"""


async def test_waiting_writes_ride_along_with_the_next_acquire(redis: Redis, keys: Keys) -> None:
    batch = WriteBatch(redis, window=30.0)  # only a ride can send them in time
    budget = RedisBudget(redis, keys, LimitTable())
    budget.batch = batch
    script = redis.register_script(SET)
    writes = [
        asyncio.create_task(batch.write(script, [keys.prefix + f"w{n}"], [f"v{n}"], within=5))
        for n in range(5)
    ]
    await asyncio.sleep(0)  # queued
    await budget.acquire("s")
    assert await asyncio.wait_for(asyncio.gather(*writes), 1) == [
        f"v{n}".encode() for n in range(5)
    ]
    assert await redis.get(keys.prefix + "w4") == b"v4"
    await budget.aclose()


async def test_without_a_ride_they_go_out_together_after_the_window(
    redis: Redis, keys: Keys
) -> None:
    batch = WriteBatch(redis, window=0.05)
    script = redis.register_script(SET)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = await asyncio.gather(
        *(batch.write(script, [keys.prefix + f"w{n}"], [str(n)], within=5) for n in range(3))
    )
    assert answers == [b"0", b"1", b"2"]
    assert 0.04 <= loop.time() - started < 1.0
    assert await redis.get(keys.prefix + "w2") == b"2"


async def test_a_write_that_times_out_before_it_is_sent_is_never_sent(
    redis: Redis, keys: Keys
) -> None:
    batch = WriteBatch(redis, window=30.0)
    script = redis.register_script(SET)
    with pytest.raises(TimeoutError):
        await batch.write(script, [keys.prefix + "late"], ["x"], within=0.05)
    assert batch.take() == []
    await batch.aclose()
    assert await redis.get(keys.prefix + "late") is None


async def test_a_streaming_replys_record_rides_with_a_budget_round_trip(
    redis: Redis, keys: Keys
) -> None:
    batch = WriteBatch(redis, window=30.0)
    budget = RedisBudget(redis, keys, LimitTable())
    budget.batch = batch
    registry = InflightRegistry(redis, keys, heartbeat=10.0, timeout=30.0)
    registry.batch = batch
    records = keys.inflight_records("slack", partition=keys.inflight_partition("r1"))
    async with registry.track(InflightRecord("r1", "slack", {"ts": "1"})) as tracker:
        tracker.confirmed(0, "Hello there", False)
        async with asyncio.timeout(5):  # the writer queues the record (else: fail)
            while not batch._queue:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
        stored = await redis.hget(records, "r1")
        assert stored is not None and b"Hello there" not in stored  # not sent alone
        await budget.acquire("s")  # another reply's update: the record rides along
        async with asyncio.timeout(5):
            while True:
                stored = await redis.hget(records, "r1")
                if stored and b"Hello there" in stored:
                    break
                await asyncio.sleep(0.005)
        assert stored is not None and b"Hello there" in stored
        tracker.settled = True
    await budget.aclose()
    await batch.aclose()


async def test_scripts_the_server_forgot_are_loaded_again(redis: Redis, keys: Keys) -> None:
    batch = WriteBatch(redis, window=30.0)
    budget = RedisBudget(redis, keys, LimitTable())
    budget.batch = batch
    script = redis.register_script(SET)
    await budget.acquire("s")  # loads the budget's script
    await redis.script_flush()  # a restart, a SCRIPT FLUSH: every script forgotten
    write = asyncio.create_task(batch.write(script, [keys.prefix + "again"], ["yes"], within=5))
    await asyncio.sleep(0)
    assert await budget.acquire("s") < 1.0  # its own script reloaded, the ride too
    assert await asyncio.wait_for(write, 1) == b"yes"
    await budget.aclose()


async def test_a_lock_extension_rides_along_and_reports_its_answer(
    redis: Redis, keys: Keys
) -> None:
    batch = WriteBatch(redis, window=30.0)
    budget = RedisBudget(redis, keys, LimitTable())
    budget.batch = batch
    locks = ConversationLocks(redis, keys, ttl=30.0, wait=1.0)
    locks.batch = batch
    lease = await locks.acquire(ConversationKey("slack", "T1", "C1", "1.0"))
    assert lease is not None
    extending = asyncio.create_task(lease.extend())
    await asyncio.sleep(0)
    assert not extending.done()  # waiting for a round trip
    await budget.acquire("s")
    assert await asyncio.wait_for(extending, 1) is True
    await lease.release()
    await budget.aclose()


async def test_a_write_already_on_its_way_is_waited_for_before_a_later_one(
    pausable: PausableRedis, keys: Keys
) -> None:
    client = connect(pausable.url)
    batch = WriteBatch(client, window=0.01, timeout=10.0)
    script = client.register_script(SET)
    await script(keys=[keys.prefix + "warm"], args=["up"])  # loaded before the pause
    try:
        with pausable.paused():
            with pytest.raises(TimeoutError):  # its writer gave up; the pipeline hasn't
                await batch.write(script, [keys.prefix + "k"], ["old"], within=0.1, key="r1")
            quiet = asyncio.create_task(batch.quiet("r1", within=10.0))
            # The server is paused, so only a quiet that doesn't wait could end here.
            done, _ = await asyncio.wait({quiet}, timeout=0.2)
            assert not done  # the old write is still on its way
        await asyncio.wait_for(quiet, 5)
        await client.set(keys.prefix + "k", "new")  # the later write lands last
        assert await client.get(keys.prefix + "k") == b"new"
    finally:
        await batch.aclose()
        await client.delete(keys.prefix + "k", keys.prefix + "warm")
        await client.aclose()


async def _reads(client: Redis) -> int:
    """Read events the server processed: one per round trip that reached it."""
    stats = await client.info("stats")
    return int(stats["total_reads_processed"])


@pytest.mark.parametrize(
    ("forgotten", "reads"),
    [
        (False, 2),  # one pipeline, and the INFO that counts it
        (True, 4),  # the pipeline, one SCRIPT LOAD, the pipeline again, the INFO
    ],
    ids=["known", "forgotten"],
)
async def test_acquires_made_in_one_turn_share_one_round_trip(
    pausable: PausableRedis, keys: Keys, forgotten: bool, reads: int
) -> None:
    client = connect(pausable.url)
    batch = WriteBatch(client, window=30.0)
    budget = RedisBudget(client, keys, LimitTable({"*": Limit(5, 1)}))
    budget.batch = batch
    try:
        await budget.acquire("warm")  # the script loaded, a connection open
        if forgotten:
            await client.script_flush()  # a restart: the budget's script forgotten
        before = await _reads(client)
        waits = await asyncio.gather(*(budget.acquire(f"s{n}") for n in range(10)))
        assert all(wait < 1.0 for wait in waits)
        assert await _reads(client) - before <= reads
        assert await client.exists(*(keys.bucket(f"s{n}") for n in range(10))) == 10
    finally:
        await budget.aclose()
        await batch.aclose()
        await client.aclose()


async def test_a_write_nobody_waits_for_any_more_fails_without_a_complaint(
    pausable: PausableRedis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(pausable.url)
    batch = WriteBatch(client, window=0.01, timeout=0.2)
    script = client.register_script(SET)
    await script(keys=[keys.prefix + "warm"], args=["up"])
    try:
        with pausable.paused():
            with pytest.raises(TimeoutError):  # the writer gives up first
                await batch.write(script, [keys.prefix + "k"], ["v"], within=0.05, key="r1")
            await batch.quiet("r1", within=5.0)  # then the pipeline fails too
        gc.collect()  # an unheard failure is reported when its future is collected
        assert "never retrieved" not in caplog.text
    finally:
        await batch.aclose()
        await client.aclose()
