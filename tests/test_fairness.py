"""FairBudget: each slot of the budget underneath goes to the most urgent waiter,
then to the reply that waited longest. Fake time, a LocalBudget underneath."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from core.clock import FakeClock
from core.reply.budget import Limit, LimitTable, LocalBudget, Turn, Urgency, Window
from core.reply.fairness import FairBudget


def fair(clock: FakeClock, limit: Limit | Window) -> FairBudget:
    return FairBudget(LocalBudget(LimitTable({"s": limit}), clock), clock)


async def _served_in_order(
    clock: FakeClock, budget: FairBudget, turns: dict[str, Turn]
) -> list[str]:
    order: list[str] = []

    async def call(name: str, turn: Turn) -> None:
        await budget.acquire("s", turn)
        order.append(name)

    tasks = [asyncio.ensure_future(call(name, turn)) for name, turn in turns.items()]
    await clock.run(asyncio.ensure_future(asyncio.gather(*tasks)))
    return order


async def test_a_first_text_and_finals_overtake_updates_that_came_earlier() -> None:
    clock = FakeClock()
    budget = fair(clock, Limit(1, 1))
    await budget.acquire("s")  # the slot at t=0 is spent: everyone below waits
    order = await _served_in_order(
        clock,
        budget,
        {
            "update-a": Turn(Urgency.UPDATE, 5.0),
            "update-b": Turn(Urgency.UPDATE, 2.0),
            "final": Turn(Urgency.FINAL, 9.0),
            "first-text": Turn(Urgency.FIRST_TEXT, 8.0),
            "one-off": None,  # type: ignore[dict-item]
        },
    )
    # Urgency first; among updates the reply whose message went longest without one.
    assert order == ["first-text", "final", "one-off", "update-b", "update-a"]
    assert clock.now() == pytest.approx(5.0)  # still one call per second: no slot lost


async def test_a_slot_goes_to_whoever_deserves_it_when_it_comes() -> None:
    # An update already waiting reserved the next slot; a first text arriving
    # later still gets it, and the update takes the first text's reservation.
    clock = FakeClock()
    budget = fair(clock, Limit(1, 2))
    await budget.acquire("s")
    got: list[tuple[str, float]] = []

    async def call(name: str, turn: Turn) -> None:
        await budget.acquire("s", turn)
        got.append((name, clock.now()))

    update = asyncio.ensure_future(call("update", Turn(Urgency.UPDATE, 0.0)))
    await clock.advance(1.0)
    first = asyncio.ensure_future(call("first-text", Turn(Urgency.FIRST_TEXT, 1.0)))
    await clock.run(asyncio.ensure_future(asyncio.gather(update, first)))
    assert got == [("first-text", 2.0), ("update", 4.0)]


async def test_replies_sharing_a_binding_budget_get_equal_shares() -> None:
    clock = FakeClock()
    budget = fair(clock, Limit(45, 60, burst=5))
    served: Counter[str] = Counter()
    last: dict[str, float] = {}

    async def reply(name: str) -> None:
        # Updates as fast as the budget lets: always one waiting.
        last[name] = clock.now()
        while clock.now() < 600:
            await budget.acquire("s", Turn(Urgency.UPDATE, last[name]))
            if clock.now() <= 600:  # (the last round is served after the ten minutes)
                served[name] += 1
            last[name] = clock.now()

    replies = [asyncio.ensure_future(reply(f"r{i}")) for i in range(20)]
    await clock.run(asyncio.ensure_future(asyncio.gather(*replies)), limit=700)
    counts = sorted(served.values())
    assert sum(counts) == pytest.approx(45 * 10 + 5, abs=2)  # the budget, fully used
    assert counts[-1] - counts[0] <= 1  # round robin: nobody more than one ahead


async def test_arrival_order_alone_would_not_be_fair() -> None:
    """The guard above must be able to fail: without FairBudget the same replies
    are served first come, first served, and a reply whose update comes round
    later than the others' still gets only its arrival slot. Here: an urgent
    first text waits behind every queued update."""
    clock = FakeClock()
    plain = LocalBudget(LimitTable({"s": Limit(1, 1)}), clock)
    await plain.acquire("s")
    order: list[str] = []

    async def call(name: str, turn: Turn) -> None:
        await plain.acquire("s", turn)
        order.append(name)

    tasks = [
        asyncio.ensure_future(call("update", Turn(Urgency.UPDATE, 0.0))),
        asyncio.ensure_future(call("first-text", Turn(Urgency.FIRST_TEXT, 0.0))),
    ]
    await clock.run(asyncio.ensure_future(asyncio.gather(*tasks)))
    assert order == ["update", "first-text"]


async def test_a_waiter_that_gives_up_gives_its_window_slot_back() -> None:
    clock = FakeClock()
    budget = fair(clock, Window(2, 10))
    await budget.acquire("s")
    await budget.acquire("s")  # the window is full until t=10
    quitter = asyncio.ensure_future(budget.acquire("s", Turn(Urgency.UPDATE, 0.0)))
    stayer = asyncio.ensure_future(budget.acquire("s", Turn(Urgency.UPDATE, 1.0)))
    await clock.advance(1.0)
    quitter.cancel()
    await clock.run(stayer)
    assert clock.now() == pytest.approx(10.0)
    # One slot left in the window from t=10: the quitter's reservation was given
    # back, so the next call goes at once instead of at t=20.
    assert await budget.try_acquire("s")
    assert not await budget.try_acquire("s")


async def test_try_acquire_is_refused_while_calls_queue() -> None:
    clock = FakeClock()
    inner = LocalBudget(LimitTable({"s": Window(1, 10)}), clock)
    budget = FairBudget(inner, clock)
    await budget.acquire("s")
    waiting = asyncio.ensure_future(budget.acquire("s", Turn(Urgency.UPDATE, 0.0)))
    await clock.settle()
    assert not await budget.try_acquire("s")
    await clock.run(waiting)


async def test_a_failing_budget_underneath_fails_a_waiter_not_the_queue() -> None:
    class Broken(LocalBudget):
        calls = 0

        async def acquire(self, scope: str, turn: Turn | None = None) -> float:
            Broken.calls += 1
            if Broken.calls == 1:
                raise ConnectionError("redis went away")
            return await super().acquire(scope, turn)

    clock = FakeClock()
    budget = FairBudget(Broken(LimitTable({}), clock), clock)
    with pytest.raises(ConnectionError):
        await budget.acquire("s")
    assert await budget.acquire("s") == 0.0
