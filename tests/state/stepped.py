"""A fake clock for tests whose tasks talk to a real Redis.

``FakeClock.run`` jumps to the next deadline as soon as the event loop has
nothing to run *right now*, which is what happens while a task waits for
Redis to answer: the jump then happens with that answer in flight, and a grant
is recorded later than the slot Redis gave it. A test that checks exact call
times across several clients needs time to move only when every one of its
tasks is asleep on the clock, which is what ``SteppedClock.drive`` does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence
from typing import Any


class SteppedClock:
    """``core.clock.Clock`` whose time moves only in ``drive``, deadline by
    deadline, once each task it drives is either done or sleeping on it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        sleeper: asyncio.Future[Any] = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
        return event.is_set()

    def sleeping(self) -> int:
        """How many tasks sleep on the clock now (a cancelled sleep doesn't count)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def drive(self, tasks: Sequence[asyncio.Future[Any]], limit: float = 3600.0) -> None:
        """Run ``tasks`` to the end; raise the first one's exception, or
        ``TimeoutError`` if the clock would pass ``limit`` first."""
        while True:
            live = sum(1 for task in tasks if not task.done())
            if live == 0:
                break
            if self.sleeping() < live:
                # Someone is running or waits for Redis: time stands still meanwhile.
                await asyncio.sleep(0.0002)
                continue
            while self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            when = self._sleepers[0][0]
            if when > limit:
                raise TimeoutError(f"the clock would pass {limit} s with tasks still waiting")
            self._now = max(self._now, when)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
