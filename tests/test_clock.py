"""``SlimEvent``: an ``asyncio.Event`` in less memory, with the same behaviour."""

from __future__ import annotations

import asyncio
import sys

from core.clock import FakeClock, MonotonicClock, SlimEvent


async def test_slim_event_wakes_every_waiter_and_forgets_cancelled_ones() -> None:
    event = SlimEvent()
    assert not event.is_set()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    await asyncio.sleep(0)
    event.set()
    assert await asyncio.gather(*waiters[1:]) == [True, True]
    assert waiters[0].cancelled()
    assert await event.wait()  # already set: at once
    event.clear()
    assert not event.is_set()
    assert not await MonotonicClock().wait(event, 0.01)
    clock = FakeClock()
    later = asyncio.create_task(clock.wait(event, 5.0))
    await clock.settle()
    event.set()
    assert await later
    assert sys.getsizeof(event._waiters) < sys.getsizeof(asyncio.Event()._waiters)
