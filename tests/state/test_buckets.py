"""The Redis budget: GCRA pacing, blocks seen by every replica, fairness, a rate
that holds across OS processes, and surviving Redis going away."""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.budget import Limit, LimitTable
from core.clock import FakeClock, MonotonicClock
from core.engine import Reply
from core.llm.events import Finish, TextDelta
from core.pacing import Pacing
from core.state.buckets import RedisBudget
from core.state.connection import EmbeddedRedis, connect
from core.state.keys import Keys
from tests.fakes.recording_sink import RecordingSink
from tests.state import replicas
from tests.state.pausable import MARGIN, PausableRedis, timed


def fake_budget(redis: Redis, keys: Keys, clock: FakeClock, **rules: Limit) -> RedisBudget:
    table = LimitTable({scope.replace("__", ":"): limit for scope, limit in rules.items()})
    return RedisBudget(redis, keys, table, clock=clock, server_time=False)


def max_in_window(times: list[float], window: float) -> int:
    """The most grants in any half-open window of ``window`` seconds."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        best = max(best, last - first + 1)
    return best


async def timed_calls(budget: RedisBudget, clock: FakeClock, scope: str, n: int) -> list[float]:
    times: list[float] = []

    async def calls() -> None:
        for _ in range(n):
            await budget.acquire(scope)
            times.append(clock.now())

    await clock.run(asyncio.ensure_future(calls()))
    return times


async def test_sustained_rate_spaces_calls(redis: Redis, keys: Keys) -> None:
    clock = FakeClock()
    budget = fake_budget(redis, keys, clock, s=Limit(2, 1))
    assert await timed_calls(budget, clock, "s", 5) == pytest.approx([0, 0.5, 1.0, 1.5, 2.0])


async def test_burst_then_rate(redis: Redis, keys: Keys) -> None:
    clock = FakeClock()
    budget = fake_budget(redis, keys, clock, ch=Limit(5, 5, burst=5))
    assert await timed_calls(budget, clock, "ch", 7) == pytest.approx([0, 0, 0, 0, 0, 1, 2])


async def test_replicas_share_one_bucket(redis: Redis, second_client: Redis, keys: Keys) -> None:
    clock = FakeClock()
    replica_a = fake_budget(redis, keys, clock, s=Limit(1, 1))
    replica_b = fake_budget(second_client, keys, clock, s=Limit(1, 1))
    await replica_a.acquire("s")
    assert await timed_calls(replica_b, clock, "s", 2) == pytest.approx([1.0, 2.0])


async def test_a_429_on_one_replica_blocks_the_scope_for_all(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    clock = FakeClock()
    replica_a = fake_budget(redis, keys, clock, s=Limit(10, 1))
    replica_b = fake_budget(second_client, keys, clock, s=Limit(10, 1))
    await replica_a.block("s", 3.0)
    await replica_a.block("unlimited", 2.0)  # no limit, but a 429 still holds it
    assert await timed_calls(replica_b, clock, "s", 2) == pytest.approx([3.1, 3.2])
    start = clock.now()
    assert await timed_calls(replica_b, clock, "unlimited", 1) == [start]  # already passed
    clock2 = FakeClock()
    replica_c = fake_budget(second_client, keys, clock2)
    await fake_budget(redis, keys, clock2).block("later", 2.0)
    assert await timed_calls(replica_c, clock2, "later", 1) == pytest.approx([2.0])


async def test_a_429_while_waiting_moves_the_waiters_slot(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    clock = FakeClock()
    replica_a = fake_budget(redis, keys, clock, s=Limit(1, 1))
    replica_b = fake_budget(second_client, keys, clock, s=Limit(1, 1))
    granted: list[float] = []

    async def two_calls() -> None:
        for _ in range(2):
            await replica_b.acquire("s")
            granted.append(clock.now())

    task = asyncio.ensure_future(two_calls())
    for _ in range(2000):  # until B sleeps towards its second slot, at t=1
        if clock.next_deadline() is not None:
            break
        await asyncio.sleep(0.001)
    assert clock.next_deadline() == pytest.approx(1.0)
    await clock.advance(0.5)
    await replica_a.block("s", 5.0)  # a 429 at t=0.5 with Retry-After: 5
    await clock.run(task)
    # Not at its reserved t=1: after the block, and one interval later, like
    # every call reserved before the 429 (no burst when it lifts).
    assert granted == pytest.approx([0.0, 6.5])


async def test_server_time_paces_real_calls(redis: Redis, keys: Keys) -> None:
    budget = RedisBudget(redis, keys, LimitTable({"s": Limit(20, 1)}))
    start = time.monotonic()
    waited = [await budget.acquire("s") for _ in range(6)]
    elapsed = time.monotonic() - start
    assert waited[0] < 0.05
    assert 0.24 <= elapsed < 2.0  # five intervals of 50 ms
    assert all(w >= 0 for w in waited)


async def test_twenty_waiters_share_fairly(redis: Redis, keys: Keys) -> None:
    limit = Limit(50, 1)  # a slot every 20 ms
    budget = RedisBudget(redis, keys, LimitTable({"shared": limit}))
    grants: dict[int, list[float]] = {n: [] for n in range(20)}
    end = time.monotonic() + 2.0

    async def reply(n: int) -> None:
        while time.monotonic() < end:
            await budget.acquire("shared")
            grants[n].append(time.monotonic())

    await asyncio.gather(*(reply(n) for n in range(20)))
    counts = [len(times) for times in grants.values()]
    assert max(counts) - min(counts) <= 2, counts  # each about 1/20 of the bucket
    assert min(counts) >= 3
    everyone = sorted(t for times in grants.values() for t in times)
    assert max_in_window(everyone, 1.0) <= limit.count + limit.burst
    for times in grants.values():  # nobody starves: a turn comes every ~20 slots
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) < 0.8


async def test_processes_hammering_one_bucket_never_exceed_its_rate(
    redis: Redis, redis_url: str, keys: Keys
) -> None:
    count, per, burst = 10.0, 1.0, 2
    processes, tasks, seconds = 4, 3, 3.0
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    go = context.Event()
    readies = [context.Event() for _ in range(processes)]
    workers = [
        context.Process(
            target=replicas.hammer,
            args=(redis_url, keys.prefix, "hammered", (count, per, burst), tasks, seconds),
            kwargs={"ready": ready, "go": go, "results": results},
        )
        for ready in readies
    ]
    for worker in workers:
        worker.start()
    try:
        for ready in readies:
            assert await asyncio.to_thread(ready.wait, 30), "a replica did not start"
        go.set()
        per_process = [await asyncio.to_thread(results.get, True, 30) for _ in workers]
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.join, 10)
            if worker.is_alive():
                worker.kill()
    assert all(worker.exitcode == 0 for worker in workers)
    grants = sorted(t for times in per_process for t in times)
    assert all(times for times in per_process), "every process got turns"
    assert len(grants) >= 0.8 * count / per * seconds, "the bucket was not saturated"
    assert max_in_window(grants, per) <= count + burst
    span = grants[-1] - grants[0]
    assert len(grants) <= burst + span * count / per + 1


async def test_redis_going_away_falls_back_once_then_returns(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A private redis-server that the test kills and restarts mid-reply (never the
    shared one). The reply finishes with all its text; one warning; back to Redis."""
    server = EmbeddedRedis(tmp_path)
    client = connect(server.start())
    budget = RedisBudget(
        client, keys, LimitTable({"test:channel": Limit(100, 1)}), retry_interval=0.05
    )
    sink = RecordingSink(MonotonicClock())
    words = [f"w{n} " for n in range(60)]
    saw_degraded = False

    async def model() -> AsyncIterator[object]:
        nonlocal saw_degraded
        for n, word in enumerate(words):
            if n == 15:
                pid = server.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
            if n == 30:
                saw_degraded = budget.degraded
            if n == 40:
                await asyncio.to_thread(server.start)
            yield TextDelta(word)
            await asyncio.sleep(0.005)
        yield Finish("stop")

    try:
        with caplog.at_level(logging.INFO, logger="core.state.buckets"):
            reply = Reply(sink, budget=budget, pacing=Pacing(min_interval=0.01, max_wait=0.01))
            result = await reply.run(model())
            assert result.outcome.state == "done"
            assert "".join(sink.texts()) == "".join(words)
            assert saw_degraded
            for _ in range(200):  # the probe notices the server is back
                if not budget.degraded:
                    break
                await asyncio.sleep(0.01)
            assert not budget.degraded
            await budget.acquire("test:channel")
            assert await client.exists(keys.bucket("test:channel")) == 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "per-process" in warnings[0].getMessage()
        assert any("back" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    finally:
        await budget.aclose()
        await client.aclose()
        server.stop()


async def test_blocks_learnt_during_an_outage_reach_redis_when_it_returns(
    tmp_path: Path, keys: Keys
) -> None:
    server = EmbeddedRedis(tmp_path)
    client = connect(server.start())
    budget = RedisBudget(client, keys, LimitTable({"s": Limit(10, 1)}), retry_interval=0.05)
    try:
        server.stop()
        await budget.block("s", 30.0)  # a 429 while Redis is away
        assert budget.degraded
        server.start()
        for _ in range(200):
            if not budget.degraded:
                break
            await asyncio.sleep(0.01)
        assert not budget.degraded
        blocked_until = int(await client.hget(keys.bucket("s"), "b") or 0)
        redis_now = await client.time()
        remaining = blocked_until / 1e6 - (redis_now[0] + redis_now[1] / 1e6)
        assert 25 < remaining <= 30  # other replicas now see it too
    finally:
        await budget.aclose()
        await client.aclose()
        server.stop()


PAUSE_BOUND = 0.4
"""The budget's bound in the pause tests: room for a second call to start halfway."""


async def test_a_pause_costs_one_bound_then_acquires_are_local_until_redis_answers(
    pausable: PausableRedis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="core.state.buckets")
    client = connect(pausable.url)
    limits = LimitTable({"s": Limit(1000, 1, burst=1000)})  # never makes anyone wait
    budget = RedisBudget(client, keys, limits, retry_interval=0.05, timeout=PAUSE_BOUND)
    try:
        await budget.acquire("s")
        with pausable.paused():
            first = asyncio.create_task(timed(budget.acquire("s")))
            await asyncio.sleep(PAUSE_BOUND / 2)
            # Still waiting on Redis when the first call gives up: cut short with it.
            (_, first_took), (_, second_took) = await asyncio.gather(
                first, timed(budget.acquire("s"))
            )
            assert PAUSE_BOUND - 0.01 <= first_took < PAUSE_BOUND + MARGIN
            assert second_took < PAUSE_BOUND * 0.75
            assert budget.degraded
            # Degraded: no acquire waits on Redis again.
            _, fifty_took = await timed(asyncio.gather(*(budget.acquire("s") for _ in range(50))))
            assert fifty_took < PAUSE_BOUND / 2
            for _ in range(5):
                _, one_took = await timed(budget.acquire("s"))
                assert one_took < PAUSE_BOUND / 2
            assert budget.degraded  # the probe can't get an answer either
        for _ in range(500):  # the probe notices the server is back
            if not budget.degraded:
                break
            await asyncio.sleep(0.01)
        assert not budget.degraded
        await client.delete(keys.bucket("s"))
        await budget.acquire("s")
        assert await client.exists(keys.bucket("s")) == 1  # shared again
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (
                logging.WARNING,
                f"Redis is unreachable (no answer from Redis within {PAUSE_BOUND:g} s): "
                "rate budgets are per-process until it returns",
            ),
            (logging.INFO, "Redis is back: rate budgets are shared again"),
        ]
    finally:
        await budget.aclose()
        await client.aclose()


async def test_a_reply_paced_by_the_budget_keeps_moving_while_redis_is_paused(
    pausable: PausableRedis, keys: Keys
) -> None:
    """The issue's reply that stood still for 15 s: now it waits one bound, once."""
    client = connect(pausable.url)
    budget = RedisBudget(
        client, keys, LimitTable({"test:channel": Limit(100, 1)}), timeout=PAUSE_BOUND
    )
    sink = RecordingSink(MonotonicClock())
    words = [f"w{n} " for n in range(40)]
    paused_at: list[float] = []
    resumed_at: list[float] = []

    async def model() -> AsyncIterator[object]:
        for n, word in enumerate(words):
            if n == 10:
                pausable.pause()
                paused_at.append(asyncio.get_running_loop().time())
            if n == 30:
                pausable.resume()
                resumed_at.append(asyncio.get_running_loop().time())
            yield TextDelta(word)
            await asyncio.sleep(0.05)  # 20 words paused: a second, two and a half bounds
        yield Finish("stop")

    try:
        reply = Reply(sink, budget=budget, pacing=Pacing(min_interval=0.01, max_wait=0.01))
        result = await reply.run(model())
        assert result.outcome.state == "done"
        assert "".join(sink.texts()) == "".join(words)
        # The sink's clock is monotonic: calls during the pause, none far apart.
        during = [c.at for c in sink.calls if paused_at[0] <= c.at <= resumed_at[0]]
        assert len(during) >= 5
        edges = [paused_at[0], *during, resumed_at[0]]
        assert max(b - a for a, b in itertools.pairwise(edges)) < PAUSE_BOUND + MARGIN
    finally:
        pausable.resume()
        await budget.aclose()
        await client.aclose()


async def test_a_429_learnt_while_redis_is_paused_costs_one_bound_and_reaches_redis_after(
    pausable: PausableRedis, keys: Keys
) -> None:
    client = connect(pausable.url)
    budget = RedisBudget(
        client, keys, LimitTable({"s": Limit(10, 1)}), retry_interval=0.05, timeout=PAUSE_BOUND
    )
    try:
        await budget.acquire("s")
        with pausable.paused():
            blocked, took = await timed(budget.block("s", 30.0))
            assert blocked is None and PAUSE_BOUND - 0.01 <= took < PAUSE_BOUND + MARGIN
            assert budget.degraded
        for _ in range(500):
            if not budget.degraded:
                break
            await asyncio.sleep(0.01)
        assert not budget.degraded
        blocked_until = int(await client.hget(keys.bucket("s"), "b") or 0)
        redis_now = await client.time()
        remaining = blocked_until / 1e6 - (redis_now[0] + redis_now[1] / 1e6)
        assert 25 < remaining <= 30  # other replicas now see it too
    finally:
        await budget.aclose()
        await client.aclose()
