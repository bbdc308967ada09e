"""Code that runs in separate OS processes ("replicas") started by the tests.

Module-level functions, so ``multiprocessing``'s spawn start method can import
them in a fresh interpreter, exactly as a second replica would start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

from core.llm.events import TextDelta
from core.reply.budget import LimitTable, RateLimit
from core.reply.engine import Reply
from core.reply.pacing import Pacing
from core.reply.sink import Frame, Outcome, SinkCall
from core.state.buckets import RedisBudget
from core.state.inflight import InflightRecord, InflightRegistry, Tracker
from core.state.keys import Keys
from core.state.settings import parse_limit
from core.state.topology import RedisClient, Topology, connect_to


def hammer(
    topology: Topology,
    prefix: str,
    scope: str,
    limit: str,
    tasks: int,
    seconds: float,
    ready: Event,
    go: Event,
    results: Queue[list[float]],
) -> None:
    """Acquire ``scope`` as fast as its ``limit`` (a ``RATE_LIMITS`` spec: GCRA or
    window) allows from ``tasks`` tasks for ``seconds`` after ``go``; put the
    wall-clock time of every grant in ``results``."""
    budget_limit = parse_limit(limit)
    asyncio.run(_hammer(topology, prefix, scope, budget_limit, tasks, seconds, ready, go, results))


async def _hammer(
    topology: Topology,
    prefix: str,
    scope: str,
    limit: RateLimit,
    tasks: int,
    seconds: float,
    ready: Event,
    go: Event,
    results: Queue[list[float]],
) -> None:
    client = connect_to(topology)
    budget = RedisBudget(client, Keys(prefix, cluster=topology.cluster), LimitTable({scope: limit}))
    await client.ping()  # connected and scripts ready before the clock starts
    ready.set()
    await asyncio.to_thread(go.wait, 30)
    end = time.time() + seconds
    grants: list[float] = []

    async def worker() -> None:
        while time.time() < end:
            await budget.acquire(scope)
            grants.append(time.time())

    await asyncio.gather(*(worker() for _ in range(tasks)))
    assert not budget.degraded
    results.put(grants)
    await client.aclose()


class TrackedSink:
    """A platform that records each frame in the in-flight registry *before*
    showing it (as adapters should), and "shows" it by writing a Redis key the
    test reads after this process is killed."""

    limit = 100_000
    append_only = False

    def __init__(self, tracker: Tracker, shown_key: str, client: RedisClient, ready: Event) -> None:
        self._tracker = tracker
        self._shown_key = shown_key
        self._client = client
        self._ready = ready

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        return ()

    async def open(self) -> None:
        return None

    async def render(self, frame: Frame) -> None:
        await self._tracker.update(text=frame.text, index=frame.index, target={"ts": "1700.1"})
        await self._client.set(self._shown_key, frame.text)
        if len(frame.text) > 200:
            self._ready.set()

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        raise AssertionError("this replica is killed before its reply can finish")


def stream_until_killed(topology: Topology, prefix: str, reply_id: str, ready: Event) -> None:
    """Stream a never-ending reply with the real engine, tracked in flight."""
    asyncio.run(_stream(topology, prefix, reply_id, ready))


async def _stream(topology: Topology, prefix: str, reply_id: str, ready: Event) -> None:
    client = connect_to(topology)
    keys = Keys(prefix, cluster=topology.cluster)
    registry = InflightRegistry(client, keys, heartbeat=0.1, timeout=0.5, owner="doomed")
    record = InflightRecord(reply_id, "slack", {"channel": "C1"})
    async with registry.track(record) as tracker:
        sink = TrackedSink(tracker, prefix + "shown", client, ready)
        reply = Reply(sink, pacing=Pacing(min_interval=0.05, max_wait=0.05))
        await reply.run(_endless_model())


async def _endless_model() -> AsyncIterator[object]:
    n = 0
    while True:
        n += 1
        yield TextDelta(f"word{n} ")
        await asyncio.sleep(0.005)
