"""Who gets a scope's next slot when calls queue for it: the most urgent, then
the reply that waited longest.

The budgets in ``core.reply.budget`` and ``core.state.buckets`` reserve slots in
arrival order, and across replicas that order is the right one: each process
gets the share of a platform's limit that its waiting calls ask for. Within
one process, arrival order is not what people want when a limit binds. A
reply whose first text queues behind twenty other replies' edits shows
nothing for half a minute; a message's final text queued behind updates
keeps a finished answer looking unfinished.

``FairBudget`` keeps the reservations and changes only who uses them. Every
waiting call still reserves one slot in the budget underneath (so replicas
keep their shares, and a window's log still counts each call), but a slot,
when it comes, goes to whichever waiter is most deserving *then*: by
``Turn`` (a first text, then final frames, then ordinary updates, and among
those the reply whose message went longest without one). Many replies
editing in one workspace thus take turns by staleness, each update carrying
everything that arrived while it waited: an equal share each.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

from core.clock import Clock, MonotonicClock
from core.reply.budget import ONE_OFF, Budget, Turn


@dataclass(order=True)
class _Waiter:
    turn: Turn
    seq: int
    granted: asyncio.Future[None] = field(compare=False)


@dataclass
class _Queue:
    waiters: list[_Waiter] = field(default_factory=list)
    """A heap; cancelled waiters stay in it until they reach the top."""
    reservations: list[asyncio.Task[None]] = field(default_factory=list)
    """Slots being waited for in the budget underneath, oldest first."""

    def best(self) -> _Waiter | None:
        while self.waiters:
            waiter = heapq.heappop(self.waiters)
            if not waiter.granted.done():
                return waiter
        return None


class FairBudget:
    """A ``Budget`` that hands each slot of ``inner`` to the most deserving
    waiter of this process. ``try_acquire`` and ``block`` pass through: every
    waiter already holds a reservation underneath, so a try never finds a slot
    that a waiter is owed."""

    def __init__(self, inner: Budget, clock: Clock | None = None) -> None:
        self.inner = inner
        self._clock = clock or MonotonicClock()
        self._queues: dict[str, _Queue] = {}
        self._seq = itertools.count()

    async def acquire(self, scope: str, turn: Turn | None = None) -> float:
        start = self._clock.now()
        queue = self._queues.get(scope)
        if queue is None:
            queue = self._queues[scope] = _Queue()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(turn or ONE_OFF, next(self._seq), granted)
        heapq.heappush(queue.waiters, waiter)
        queue.reservations.append(asyncio.create_task(self._reserve(scope, queue)))
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.cancelled() or not waiter.granted.done():
                waiter.granted.cancel()
                self._cancel_one(queue)  # one waiter fewer: one reservation fewer
            raise
        return self._clock.now() - start

    async def try_acquire(self, scope: str) -> bool:
        return await self.inner.try_acquire(scope)

    async def block(self, scope: str, seconds: float) -> None:
        await self.inner.block(scope, seconds)

    async def _reserve(self, scope: str, queue: _Queue) -> None:
        """Wait for one slot underneath, then give it to the best waiter now."""
        task = asyncio.current_task()
        try:
            await self.inner.acquire(scope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the budget underneath failed: a waiter must hear it
            waiter = queue.best()
            if waiter is not None:
                waiter.granted.set_exception(exc)
        else:
            waiter = queue.best()
            if waiter is not None:
                waiter.granted.set_result(None)
            # else every waiter gave up after this slot was reserved: it goes unused.
        finally:
            if task in queue.reservations:
                queue.reservations.remove(task)
            if not queue.reservations:
                queue.waiters = [w for w in queue.waiters if not w.granted.done()]
                heapq.heapify(queue.waiters)
                if not queue.waiters and self._queues.get(scope) is queue:
                    del self._queues[scope]

    @staticmethod
    def _cancel_one(queue: _Queue) -> None:
        """Cancel the newest pending reservation: its slot is the furthest away,
        and a window's gives its reservation back when cancelled."""
        for task in reversed(queue.reservations):
            if not task.done():
                task.cancel()
                return
