"""Hand-overs: requests a draining process accepted, answered by the next one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.state.connection import REDIS_FAILURES, connect
from core.state.deferred import DeferredRequest, DeferredRequests
from core.state.keys import Keys


async def test_requests_come_back_oldest_first_with_their_payload_and_time(
    redis: Redis, keys: Keys
) -> None:
    deferred = DeferredRequests(redis, keys)
    before = time.time()
    for n in range(3):
        await deferred.push("discord", "0", {"message": str(n), "nested": {"ids": [n, "x"]}})
    after = time.time()
    taken = await deferred.take("discord", "0")
    assert [r.payload for r in taken] == [
        {"message": "0", "nested": {"ids": [0, "x"]}},
        {"message": "1", "nested": {"ids": [1, "x"]}},
        {"message": "2", "nested": {"ids": [2, "x"]}},
    ]
    assert all((r.platform, r.partition) == ("discord", "0") for r in taken)
    assert all(before <= r.deferred_at <= after for r in taken)
    assert [r.deferred_at for r in taken] == sorted(r.deferred_at for r in taken)
    assert await deferred.take("discord", "0") == []  # taken means gone
    assert not await redis.exists(keys.deferred("discord", "0"))


async def test_take_returns_at_most_limit_and_leaves_the_rest_in_order(
    redis: Redis, keys: Keys
) -> None:
    deferred = DeferredRequests(redis, keys)
    for n in range(5):
        await deferred.push("slack", "", {"n": n})
    assert [r.payload["n"] for r in await deferred.take("slack", "", limit=2)] == [0, 1]
    assert [r.payload["n"] for r in await deferred.take("slack", "", limit=10)] == [2, 3, 4]
    assert await deferred.take("slack", "", limit=0) == []


async def test_partitions_and_platforms_are_kept_apart(redis: Redis, keys: Keys) -> None:
    deferred = DeferredRequests(redis, keys)
    await deferred.push("discord", "0", {"to": "shard 0"})
    await deferred.push("discord", "1", {"to": "shard 1"})
    await deferred.push("slack", "", {"to": "slack"})
    await deferred.push("discord", "", {"to": "any discord process"})
    assert [r.payload for r in await deferred.take("discord", "1")] == [{"to": "shard 1"}]
    assert await deferred.take("discord", "1") == []
    assert await deferred.take("discord", "2") == []
    assert [r.payload for r in await deferred.take("discord", "")] == [
        {"to": "any discord process"}
    ]
    assert [r.payload for r in await deferred.take("slack", "")] == [{"to": "slack"}]
    assert [r.payload for r in await deferred.take("discord", "0")] == [{"to": "shard 0"}]
    # Names come from outside: a ``:`` must not let two partitions share a key.
    assert keys.deferred("a:b", "c") != keys.deferred("a", "b:c")
    assert keys.deferred("discord", "0").startswith(keys.prefix)


async def test_two_replicas_racing_take_each_request_exactly_once(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    await DeferredRequests(redis, keys).push("discord", "3", {"n": -1})  # warm both pools
    replicas = [DeferredRequests(redis, keys), DeferredRequests(second_client, keys)]
    await replicas[1].take("discord", "3")
    total = 400
    for start in range(0, total, 100):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, start + 100):
                entry = DeferredRequest("discord", "3", {"n": n}, time.time())
                pipe.rpush(keys.deferred("discord", "3"), entry.to_json())
            await pipe.execute()
    go = asyncio.Event()

    async def consume(replica: DeferredRequests) -> list[int]:
        got: list[int] = []
        await go.wait()
        while batch := await replica.take("discord", "3", limit=7):
            got += [int(r.payload["n"]) for r in batch]
        return got

    consumers = [asyncio.create_task(consume(replicas[n % 2])) for n in range(6)]
    go.set()
    results = await asyncio.gather(*consumers)
    everything = [n for got in results for n in got]
    assert sorted(everything) == list(range(total))  # none lost, none twice
    assert all(got == sorted(got) for got in results)  # each taker sees them oldest first
    by_replica = [sum(len(results[i]) for i in range(r, 6, 2)) for r in (0, 1)]
    assert all(by_replica), by_replica  # both replicas really took part


async def test_entries_older_than_max_age_and_undecodable_ones_are_dropped_with_a_warning(
    redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    deferred = DeferredRequests(redis, keys, max_age=600)
    key = keys.deferred("discord", "0")
    stale = DeferredRequest(
        "discord", "0", {"token": "secret-interaction-token"}, time.time() - 601
    )
    await redis.rpush(key, stale.to_json())
    await redis.rpush(key, b"\xff not json", '{"payload": "not an object", "deferred_at": 1}')
    await deferred.push("discord", "0", {"message": "fresh"})
    with caplog.at_level(logging.WARNING, logger="core.state.deferred"):
        taken = await deferred.take("discord", "0")
    assert [r.payload for r in taken] == [{"message": "fresh"}]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert "left unanswered for 60" in warnings[0]
    assert all("undecodable" in w for w in warnings[1:])
    assert "secret-interaction-token" not in caplog.text  # payloads may hold credentials


async def test_the_list_expires_with_its_newest_entry(redis: Redis, keys: Keys) -> None:
    deferred = DeferredRequests(redis, keys, max_age=90)
    await deferred.push("discord", "0", {"n": 1})
    assert 85 <= await redis.ttl(keys.deferred("discord", "0")) <= 90


async def test_a_payload_json_cannot_hold_is_refused_before_redis(redis: Redis, keys: Keys) -> None:
    deferred = DeferredRequests(redis, keys)
    with pytest.raises(TypeError):
        await deferred.push("discord", "0", {"when": object()})
    with pytest.raises(ValueError):
        await deferred.push("discord", "0", {"n": float("nan")})
    assert not await redis.exists(keys.deferred("discord", "0"))


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.single_server
async def test_a_redis_that_never_answers_fails_push_and_take_within_the_timeout(
    silent_redis: str, keys: Keys
) -> None:
    client = connect(silent_redis)
    deferred = DeferredRequests(client, keys, timeout=0.3)
    try:
        for call in (
            lambda: deferred.push("discord", "0", {"n": 1}),
            lambda: deferred.take("discord", "0"),
        ):
            started = time.monotonic()
            with pytest.raises(REDIS_FAILURES) as raised:
                await call()
            elapsed = time.monotonic() - started
            assert isinstance(raised.value, TimeoutError)
            assert 0.3 <= elapsed < 1.5
    finally:
        await client.aclose()


async def test_pickup_answers_now_and_later_logs_a_failing_answer_and_stops_when_cancelled(
    redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    deferred = DeferredRequests(redis, keys)
    await deferred.push("discord", "0", {"n": 1})
    await deferred.push("discord", "1", {"n": 2, "token": "secret-interaction-token"})
    await deferred.push("discord", "2", {"n": 99})  # another process's shard
    answered: list[tuple[str, int]] = []
    arrived = asyncio.Condition()
    release_slow = asyncio.Event()

    async def answer(request: DeferredRequest) -> None:
        n = int(request.payload["n"])
        async with arrived:
            answered.append((request.partition, n))
            arrived.notify_all()
        if n == 2:
            raise RuntimeError("Discord said no")
        if n == 4:
            await release_slow.wait()  # a long reply, still running at cancel

    async def until(count: int) -> None:
        async with asyncio.timeout(5), arrived:
            await arrived.wait_for(lambda: len(answered) >= count)

    with caplog.at_level(logging.ERROR, logger="core.state.deferred"):
        pickup = asyncio.create_task(
            deferred.run_pickup("discord", ["0", "1"], answer, interval=0.05)
        )
        await until(2)  # at start-up
        await deferred.push("discord", "0", {"n": 3})
        await deferred.push("discord", "1", {"n": 4})
        await until(4)  # on a later round
        pickup.cancel()
        await asyncio.sleep(0)
        assert not pickup.done()  # it waits for the answer it started
        await deferred.push("discord", "0", {"n": 5})
        release_slow.set()
        with pytest.raises(asyncio.CancelledError):
            await pickup
    assert sorted(answered) == [("0", 1), ("0", 3), ("1", 2), ("1", 4)]  # each exactly once
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "could not answer a deferred discord request (partition '1'" in failure.getMessage()
    assert "secret-interaction-token" not in caplog.text
    assert [r.payload for r in await deferred.take("discord", "0")] == [{"n": 5}]
    assert [r.payload for r in await deferred.take("discord", "2")] == [{"n": 99}]


async def test_pickup_cancelled_while_it_takes_loses_nothing(redis: Redis, keys: Keys) -> None:
    deferred = DeferredRequests(redis, keys)
    for n in range(20):
        await deferred.push("discord", "0", {"n": n})
    answered: list[int] = []

    async def answer(request: DeferredRequest) -> None:
        answered.append(int(request.payload["n"]))

    for _ in range(5):  # cancelled at its first suspension: inside the pop
        pickup = asyncio.create_task(deferred.run_pickup("discord", ["0"], answer))
        await asyncio.sleep(0)
        pickup.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pickup
    left = [int(r.payload["n"]) for r in await deferred.take("discord", "0")]
    assert sorted(answered + left) == list(range(20))
