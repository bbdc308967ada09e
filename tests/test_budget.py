"""The in-process budget: GCRA slots and sliding windows, fairness among waiters,
429 blocks, try-acquire. Fake time."""

from __future__ import annotations

import asyncio

import pytest

from core.clock import FakeClock
from core.reply.budget import Limit, LimitTable, LocalBudget, Window, acquire_all


def budget_with(clock: FakeClock, **rules: Limit | Window) -> LocalBudget:
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


# ---------------------------------------------------------------- windows


async def grants_at(
    budget: LocalBudget, clock: FakeClock, scope: str, arrivals: list[float]
) -> list[float]:
    """One acquire per arrival time (each its own task, as replies are); the
    time each was granted, in arrival order."""
    granted: list[float] = [-1.0] * len(arrivals)

    async def one(n: int, at: float) -> None:
        await clock.sleep(at - clock.now())
        await budget.acquire(scope)
        granted[n] = clock.now()

    tasks = [asyncio.ensure_future(one(n, at)) for n, at in enumerate(arrivals)]
    await clock.run(asyncio.ensure_future(asyncio.gather(*tasks)))
    return granted


async def test_a_window_lets_its_count_go_at_once_then_waits_for_the_oldest_to_leave() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Window(3, 10))
    # Three at once; then each waits until the call three before it is 10 s old.
    assert await grants_at(budget, clock, "s", [0, 0, 0, 1, 1, 1, 1]) == [
        0,
        0,
        0,
        10,
        10,
        10,
        20,
    ]


async def test_a_window_counts_what_happened_in_the_last_per_seconds_only() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Window(3, 10))
    # Calls at 0, 4 and 6 fill the window; at 7 the next waits for 0 to leave (10),
    # the one after for 4 (14); at 30 the window is empty again.
    assert await grants_at(budget, clock, "s", [0, 4, 6, 7, 7, 30]) == [0, 4, 6, 10, 14, 30]


async def test_a_window_is_half_open_a_call_exactly_per_seconds_later_is_in_the_next() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Window(1, 5))
    assert await grants_at(budget, clock, "s", [0, 0, 0]) == [0, 5, 10]


async def test_window_waiters_are_served_in_arrival_order_and_share_fairly() -> None:
    clock = FakeClock()
    limit = Window(49, 61)  # Slack's chat.startStream default
    budget = LocalBudget(LimitTable({"slack:*:chat.startStream": limit}), clock)
    times: list[float] = []
    per_worker = [0] * 20
    gaps: list[float] = []

    async def worker(i: int) -> None:
        last = None
        while clock.now() < 600:
            await budget.acquire("slack:T1:chat.startStream")
            times.append(clock.now())
            per_worker[i] += 1
            if last is not None:
                gaps.append(clock.now() - last)
            last = clock.now()
            await clock.sleep(0.1)  # the platform call

    tasks = [asyncio.ensure_future(worker(i)) for i in range(20)]
    await clock.run(asyncio.ensure_future(asyncio.gather(*tasks)), limit=700)
    assert max_in_window(sorted(times), 61.0) == 49  # full, never over
    assert max(per_worker) - min(per_worker) <= 1  # each its turn, in arrival order
    assert max(gaps) <= 61.0  # nobody waits more than one window for its next turn


async def test_a_block_while_waiting_gives_the_slot_back_and_reserves_after_it() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Window(2, 10))
    granted: list[float] = []

    async def one(at: float) -> None:
        await clock.sleep(at - clock.now())
        await budget.acquire("s")
        granted.append(clock.now())

    tasks = [asyncio.ensure_future(one(at)) for at in (0, 0, 2, 2)]  # the last two: slot 10
    await clock.advance(3)
    await budget.block("s", 9.0)  # a 429 at 3 with Retry-After: 9
    await clock.run(asyncio.ensure_future(asyncio.gather(*tasks)))
    # Both waiters woke at 10, found the block, gave back the slots they made no
    # call in, and went when it lifted (not at 20, as if calls had been made at 10).
    assert granted == [0, 0, 12, 12]
    assert await grants_at(budget, clock, "s", [13]) == [22]


async def test_a_cancelled_window_waiter_gives_its_slot_to_the_next() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Window(1, 10))
    await budget.acquire("s")
    doomed = asyncio.ensure_future(budget.acquire("s"))  # would go at 10
    await clock.advance(1)
    doomed.cancel()
    await clock.settle()
    assert await grants_at(budget, clock, "s", [2]) == [10]  # not 20


async def test_a_window_and_gcra_scope_in_one_table() -> None:
    clock = FakeClock()
    budget = budget_with(clock, w=Window(2, 10), g=Limit(2, 10))
    assert await grants_at(budget, clock, "w", [0, 0, 0]) == [0, 0, 10]
    clock2 = FakeClock()
    budget2 = budget_with(clock2, w=Window(2, 10), g=Limit(2, 10))
    assert await grants_at(budget2, clock2, "g", [0, 0, 0]) == [0, 5, 10]


# ---------------------------------------------------------------- try_acquire


async def test_try_acquire_takes_a_free_window_slot_and_refuses_without_waiting() -> None:
    clock = FakeClock()
    budget = budget_with(clock, s=Window(2, 10))
    assert [await budget.try_acquire("s") for _ in range(3)] == [True, True, False]
    assert clock.now() == 0.0 and clock.next_deadline() is None  # refused at once
    await clock.advance(9.999)
    assert await budget.try_acquire("s") is False
    await clock.advance(0.001)  # both calls are exactly 10 s old: out of the window
    assert [await budget.try_acquire("s") for _ in range(3)] == [True, True, False]


async def test_a_refused_try_takes_nothing() -> None:
    clock = FakeClock()
    budget = budget_with(clock, w=Window(1, 10), g=Limit(1, 1))
    await budget.acquire("w")
    await budget.acquire("g")
    await clock.advance(0.5)
    for _ in range(5):
        assert await budget.try_acquire("w") is False
        assert await budget.try_acquire("g") is False
    # The next acquires get the slots they would have had without the tries.
    waiting = asyncio.ensure_future(acquire_all(budget, ["g", "w"]))
    await clock.run(waiting)
    assert waiting.result() == pytest.approx(0.5 + 9.0)
    assert clock.now() == pytest.approx(10.0)


async def test_try_acquire_never_takes_a_slot_a_waiter_holds() -> None:
    clock = FakeClock()
    budget = budget_with(clock, g=Limit(1, 1, burst=2), w=Window(1, 10))
    assert [await budget.try_acquire("g") for _ in range(3)] == [True, True, False]
    waiter = asyncio.ensure_future(budget.acquire("g"))  # holds the slot at 1
    await clock.advance(0.5)
    assert await budget.try_acquire("g") is False
    await clock.advance(0.5)
    await clock.run(waiter)
    assert clock.now() == 1.0
    assert await budget.try_acquire("g") is False  # the next free slot is at 2
    await budget.acquire("w")
    window_waiter = asyncio.ensure_future(budget.acquire("w"))  # holds 10
    await clock.advance(9.5)
    assert await budget.try_acquire("w") is False
    await clock.run(window_waiter)
    assert clock.now() == pytest.approx(11.0)  # 1 + 10: the window's slot at 10 + 1
    assert await budget.try_acquire("w") is False  # until 21


async def test_try_acquire_respects_blocks_and_unlimited_scopes() -> None:
    clock = FakeClock()
    budget = budget_with(clock, w=Window(5, 10), g=Limit(5, 1, burst=5))
    assert await budget.try_acquire("free") is True
    await budget.block("free", 2.0)
    await budget.block("w", 2.0)
    await budget.block("g", 2.0)
    assert [await budget.try_acquire(s) for s in ("free", "w", "g")] == [False, False, False]
    await clock.advance(2.0)
    assert [await budget.try_acquire(s) for s in ("free", "w", "g")] == [True, True, True]


def test_windows_in_the_limit_table_and_their_checks() -> None:
    table = LimitTable({"slack:*:chat.startStream": Window(19, 61), "slack:*": Limit(45, 60, 5)})
    assert table.lookup("slack:T1:chat.startStream") == Window(19, 61)
    assert table.lookup("slack:T1:chat.update") == Limit(45, 60, 5)
    assert Window(19, 61).spread() == Limit(19, 61)
    assert Window(19, 61).burst == 1
    for bad in ((0, 1), (1, 0), (2.5, 1), (True, 1)):
        with pytest.raises(ValueError, match="invalid window"):
            Window(*bad)  # type: ignore[arg-type]


async def test_a_window_counts_in_whole_microseconds_not_float_seconds() -> None:
    """0.013 - 0.010 is 0.0029999… in floats: a call at 0.003 must still count
    as exactly one window ago, as the platform (and the Redis log) count it."""

    class At:
        t = 0.0

        def now(self) -> float:
            return self.t

        async def sleep(self, seconds: float) -> None:
            self.t += seconds

    clock = At()
    budget = LocalBudget(LimitTable({"s": Window(2, 0.01)}), clock)  # type: ignore[arg-type]
    clock.t = 0.003
    assert await budget.try_acquire("s")
    clock.t = 0.010
    assert await budget.try_acquire("s")
    clock.t = 0.013
    assert await budget.try_acquire("s")  # the call at 0.003 left the window
    assert not await budget.try_acquire("s")
