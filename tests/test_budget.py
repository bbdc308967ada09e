"""The in-process budget: GCRA slots, fairness among waiters, 429 blocks. Fake time."""

from __future__ import annotations

import asyncio

import pytest

from core.budget import Limit, LimitTable, LocalBudget, acquire_all
from core.clock import FakeClock


def budget_with(clock: FakeClock, **rules: Limit) -> LocalBudget:
    return LocalBudget(LimitTable({k.replace("__", ":"): v for k, v in rules.items()}), clock)


async def test_unlimited_scope_never_waits() -> None:
    clock = FakeClock()
    budget = LocalBudget(clock=clock)
    for _ in range(100):
        assert await budget.acquire("anything") == 0.0
    assert clock.now() == 0.0


async def test_sustained_rate_spaces_calls() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Limit(2, 1))
    times: list[float] = []

    async def calls() -> None:
        for _ in range(5):
            await budget.acquire("s")
            times.append(clock.now())

    await clock.run(asyncio.ensure_future(calls()))
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])


async def test_burst_then_rate() -> None:
    clock = FakeClock()
    budget = budget_with(clock, ch=Limit(5, 5, burst=5))
    times: list[float] = []

    async def calls() -> None:
        for _ in range(7):
            await budget.acquire("ch")
            times.append(clock.now())

    await clock.run(asyncio.ensure_future(calls()))
    assert times == pytest.approx([0, 0, 0, 0, 0, 1, 2])


def max_in_window(times: list[float], window: float) -> int:
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + window - 1e-9))
    return best


async def test_twenty_waiters_share_fairly_and_never_exceed_the_limit() -> None:
    clock = FakeClock()
    limit = Limit(50, 60)  # Slack's chat.update tier 3
    budget = LocalBudget(LimitTable({"slack:*:chat.update": limit}), clock)
    times: list[float] = []
    per_worker = [0] * 20

    async def worker(i: int) -> None:
        while clock.now() < 600:
            await budget.acquire("slack:T1:chat.update")
            times.append(clock.now())
            per_worker[i] += 1

    tasks = [asyncio.ensure_future(worker(i)) for i in range(20)]
    await clock.run(asyncio.ensure_future(asyncio.gather(*tasks)), limit=700)
    assert max_in_window(sorted(times), 60.0) <= 50
    assert max(per_worker) - min(per_worker) <= 1  # FIFO slots: each gets 1/20
    assert sum(per_worker) <= 50 * 11  # ten minutes at 50/min, plus calls reserved by then


async def test_block_delays_every_waiter_until_retry_after() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Limit(10, 1))
    await budget.acquire("s")
    await budget.block("s", 3.0)
    done: list[float] = []

    async def one() -> None:
        await budget.acquire("s")
        done.append(clock.now())

    await clock.run(asyncio.ensure_future(asyncio.gather(one(), one())))
    assert min(done) >= 3.0


async def test_block_while_waiting_reserves_again() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Limit(1, 1))
    await budget.acquire("s")
    waiter = asyncio.ensure_future(budget.acquire("s"))  # would go at t=1
    await clock.advance(0.5)
    await budget.block("s", 5.0)  # a 429 elsewhere at t=0.5 for 5 s
    await clock.run(waiter)
    assert clock.now() >= 5.5


async def test_block_on_an_unlimited_scope_still_blocks() -> None:
    clock = FakeClock()
    budget = LocalBudget(clock=clock)
    await budget.block("free", 2.0)
    task = asyncio.ensure_future(budget.acquire("free"))
    await clock.run(task)
    assert clock.now() == pytest.approx(2.0)


async def test_acquire_all_takes_every_scope() -> None:
    clock = FakeClock()
    budget = budget_with(clock, a=Limit(1, 1), b=Limit(1, 2))
    await acquire_all(budget, ["a", "b"])
    task = asyncio.ensure_future(acquire_all(budget, ["a", "b"]))
    await clock.run(task)
    assert clock.now() == pytest.approx(2.0)  # b is the slower one


def test_limit_table_first_match_wins_and_set_overrides() -> None:
    table = LimitTable({"discord:channel:*": Limit(5, 5, 5), "discord:*": Limit(50, 1)})
    assert table.lookup("discord:channel:42") == Limit(5, 5, 5)
    assert table.lookup("discord:global") == Limit(50, 1)
    assert table.lookup("slack:T1:chat.update") is None
    table.set("discord:channel:42", Limit(1, 1))
    assert table.lookup("discord:channel:42") == Limit(1, 1)
    assert table.lookup("discord:channel:43") == Limit(5, 5, 5)


def test_invalid_limit_is_rejected() -> None:
    with pytest.raises(ValueError):
        Limit(0, 1)
    with pytest.raises(ValueError):
        Limit(1, 1, burst=0)
