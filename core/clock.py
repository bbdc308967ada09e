"""Injected time, so pacing and budgets are tested with a fake clock, not sleeps.

Everything in ``core`` that waits for time asks a ``Clock``. Production uses
``MonotonicClock`` (the event loop's clock); tests use ``FakeClock`` and move
time by hand, so a test of "one edit per second for a minute" runs in
milliseconds and never races.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale; only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (returns at once for ``seconds <= 0``)."""
        ...

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait for ``event`` at most ``seconds``; True if it was set."""
        ...


class SlimEvent(asyncio.Event):
    """An ``asyncio.Event`` that keeps its waiters in a list.

    asyncio's own starts with an empty ``deque`` (760 bytes, an Event 860 in all)
    and a streaming reply holds four Events: 3 KB of each reply's memory. The
    Event's methods only append, remove and iterate its waiters, which a list
    does in 56 bytes (one waiter is the usual most)."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters = []  # type: ignore[assignment]


class MonotonicClock:
    """The event loop's monotonic clock.

    ``now`` is ``time.monotonic``, which is what asyncio's loops read in
    ``loop.time()``: looking the running loop up on every call cost five times
    as much, and the engine stamps every streamed token with it."""

    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return False
        return True


class FakeClock:
    """A clock that moves only when a test says so.

    ``advance`` moves time forward in steps, waking sleepers in deadline order
    and letting the event loop run between steps, so code that sleeps in a loop
    behaves exactly as it would in real time. ``run`` drives a coroutine to
    completion by jumping to the next deadline whenever nothing else can run.
    """

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
        await self._deadline(self._now + seconds)

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        if seconds <= 0:
            return False
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        deadline: asyncio.Future[Any] = self._deadline(self._now + seconds)
        try:
            await asyncio.wait({waiter, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            deadline.cancel()
        return event.is_set()

    def _deadline(self, when: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), future))
        return future

    def next_deadline(self) -> float | None:
        """The earliest time a sleeper waits for, ignoring abandoned ones."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self, rounds: int = 30) -> None:
        """Let every task that can run now run, without moving time."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in order on the way."""
        target = self._now + seconds
        await self.settle()
        while True:
            when = self.next_deadline()
            if when is None or when > target:
                break
            self._now = max(self._now, when)
            self._wake_due()
            await self.settle()
        self._now = target
        await self.settle()

    async def run(
        self, awaitable: asyncio.Future[object] | asyncio.Task[object], limit: float = 3600.0
    ) -> None:
        """Drive ``awaitable`` to completion, jumping from deadline to deadline.

        Raises ``TimeoutError`` if fake time passes ``limit`` seconds first, so a
        test with a bug fails instead of hanging.
        """
        end = self._now + limit
        await self.settle()
        while not awaitable.done():
            when = self.next_deadline()
            if when is None:
                # Nothing sleeps on the clock: something waits on real I/O or another task.
                await asyncio.sleep(0.001)
                continue
            if when > end:
                raise TimeoutError(f"fake clock passed {limit}s and the task is still running")
            self._now = max(self._now, when)
            self._wake_due()
            await self.settle()

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
