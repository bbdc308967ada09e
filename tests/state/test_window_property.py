"""Window safety, proved against a model of the platform's limiter.

Hypothesis draws a window (``count`` calls per ``per``), a few processes and
arbitrary arrival times at which each process acquires, tries to acquire, or
reports a 429 (``block``). Each process is its own ``RedisBudget`` on its own
Redis connection pool, as a replica is; time is one ``SteppedClock`` that moves
only while every task sleeps on it, so each grant is recorded at the exact time
it was given. The granted calls are then replayed, in time order, into models
of the platforms' limiters: a sliding window (Slack's tiers, as the fake Slack
counts them) and fixed windows that start at their first call (Discord's
buckets, as the fake Discord counts them). Not one call may be refused.

Also checked on every schedule: no call is granted while a 429 blocks the
scope; ``try_acquire`` never waits, and answers False only when a slot really
is taken (the window is full, a waiter holds the next slot, or a 429 blocks
it); an acquire waits no longer than that either (no slot is lost to a waiter
that gave it back); acquires are served in arrival order when no 429 reorders
them; every acquire ends (nobody starves).

The same properties hold for one ``LocalBudget`` shared by the tasks of one
process, checked with more examples because it needs no Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.reply.budget import Budget, LimitTable, LocalBudget, Window
from core.state.buckets import RedisBudget
from core.state.keys import Keys
from core.state.topology import Topology, connect_to
from tests.state.conftest import SESSION_PREFIX, delete_prefix
from tests.state.stepped import SteppedClock

SCOPE = "slack:T1:chat.startStream"
MICROS = 1_000_000

Kind = Literal["acquire", "try", "block"]


@dataclass(frozen=True)
class Arrival:
    process: int
    at_ms: int
    kind: Kind
    block_ms: int = 0


@dataclass(frozen=True)
class Schedule:
    count: int
    per_ms: int
    processes: int
    arrivals: tuple[Arrival, ...]


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    count = draw(st.integers(1, 4))
    # Short windows and a millisecond grid: arrivals often fall exactly on the
    # edge of a window, where half-open counting matters.
    per_ms = draw(st.sampled_from([10, 40, 250]))
    processes = draw(st.integers(1, 3))
    arrival = st.builds(
        Arrival,
        process=st.integers(0, processes - 1),
        at_ms=st.integers(0, 3 * per_ms),
        kind=st.sampled_from(["acquire", "acquire", "acquire", "try", "try", "block"]),
        block_ms=st.integers(1, 2 * per_ms),
    )
    arrivals = draw(st.lists(arrival, min_size=1, max_size=24))
    return Schedule(count, per_ms, processes, tuple(arrivals))


@dataclass
class Played:
    """What happened, in µs on the shared clock."""

    grants: list[int] = field(default_factory=list)
    acquires: list[tuple[int, int]] = field(default_factory=list)  # (arrival, grant)
    tries: list[tuple[int, bool]] = field(default_factory=list)  # (at, answer)
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (from, until)
    try_waited: list[float] = field(default_factory=list)  # clock time a try took


def micros(seconds: float) -> int:
    return round(seconds * MICROS)


async def play(schedule: Schedule, budgets: list[Budget], clock: SteppedClock) -> Played:
    played = Played()

    async def arrive(arrival: Arrival) -> None:
        await clock.sleep(arrival.at_ms / 1000 - clock.now())
        budget = budgets[arrival.process]
        start = clock.now()
        if arrival.kind == "acquire":
            await budget.acquire(SCOPE)
            played.grants.append(micros(clock.now()))
            played.acquires.append((micros(start), micros(clock.now())))
        elif arrival.kind == "try":
            granted = await budget.try_acquire(SCOPE)
            played.try_waited.append(clock.now() - start)
            played.tries.append((micros(start), granted))
            if granted:
                played.grants.append(micros(start))
        else:
            await budget.block(SCOPE, arrival.block_ms / 1000)
            played.blocks.append((micros(start), micros(start + arrival.block_ms / 1000)))

    tasks = [asyncio.ensure_future(arrive(a)) for a in schedule.arrivals]
    # Generous: a FIFO queue of 24 calls needs 24 windows, blocks add 2 each.
    await clock.drive(tasks, limit=80 * schedule.per_ms / 1000)
    return played


class SlidingWindowPlatform:
    """Slack's tiers as the fake Slack enforces them: a call is refused (429)
    when ``count`` accepted calls lie in the half-open window (t - per, t]."""

    def __init__(self, count: int, per: int) -> None:
        self.count, self.per = count, per
        self.hits: deque[int] = deque()

    def call(self, t: int) -> bool:
        while self.hits and self.hits[0] <= t - self.per:
            self.hits.popleft()
        if len(self.hits) >= self.count:
            return False
        self.hits.append(t)
        return True


class FixedWindowPlatform:
    """Discord's buckets as the fake Discord enforces them: ``count`` calls per
    window of ``per`` that starts at the first call after the previous one ended."""

    def __init__(self, count: int, per: int) -> None:
        self.count, self.per = count, per
        self.start: int | None = None
        self.used = 0

    def call(self, t: int) -> bool:
        if self.start is None or t >= self.start + self.per:
            self.start, self.used = t, 0
        if self.used >= self.count:
            return False
        self.used += 1
        return True


def check(schedule: Schedule, played: Played) -> None:
    count, per = schedule.count, schedule.per_ms * 1000
    grants = sorted(played.grants)
    sliding, fixed = SlidingWindowPlatform(count, per), FixedWindowPlatform(count, per)
    refused = [t for t in grants if not sliding.call(t)]
    assert not refused, f"the platform's sliding window refuses calls at {refused}: {grants}"
    refused = [t for t in grants if not fixed.call(t)]
    assert not refused, f"a fixed window refuses calls at {refused}: {grants}"

    def blocked(t: int) -> bool:
        return any(start <= t < until for start, until in played.blocks)

    def full(t: int) -> bool:
        return sum(1 for g in grants if t - per < g <= t) >= count

    inside = [t for t in grants if any(s < t < u for s, u in played.blocks)]
    assert not inside, f"calls granted while a 429 blocked the scope: {inside}"

    assert played.try_waited == [0.0] * len(played.tries), "a try waited"
    for at, took in played.tries:
        if took:
            continue
        waiting = any(arrived <= at <= granted for arrived, granted in played.acquires)
        assert full(at) or waiting or blocked(at), (
            f"a try at {at} was refused with a free window, no waiter and no block"
        )

    # An acquire waits only as long as it must: just before its grant, the
    # window was full, a 429 blocked the scope, or another waiter held a slot.
    for n, (arrived, granted) in enumerate(played.acquires):
        t = granted - 1
        if granted == arrived or full(t) or blocked(t):
            continue
        others = played.acquires[:n] + played.acquires[n + 1 :]
        assert any(a <= t < g for a, g in others), (
            f"an acquire from {arrived} waited until {granted} for no call, block or waiter"
        )

    arrivals = [arrival for arrival, _ in played.acquires]
    assert len(arrivals) == sum(1 for a in schedule.arrivals if a.kind == "acquire")
    if not played.blocks:  # a 429 makes waiters reserve anew, out of order
        by_arrival = sorted(played.acquires)
        for (a1, g1), (a2, g2) in itertools.pairwise(by_arrival):
            assert a1 == a2 or g1 <= g2, f"arrived at {a1} and {a2}, granted at {g1} and {g2}"


PropertySettings = Callable[[Callable[..., None]], Callable[..., None]]


def window_settings(examples: int) -> PropertySettings:
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its schedule
        suppress_health_check=list(HealthCheck),
    )


@window_settings(examples=300)
@given(schedule=schedules())
def test_replicas_sharing_a_redis_window_never_exceed_the_platforms_limit(
    schedule: Schedule, topology: Topology
) -> None:
    async def scenario() -> Played:
        keys = Keys(f"{SESSION_PREFIX}{uuid.uuid4().hex[:12]}:", cluster=topology.cluster)
        clients = [connect_to(topology) for _ in range(schedule.processes)]
        clock = SteppedClock()
        table = LimitTable({SCOPE: Window(schedule.count, schedule.per_ms / 1000)})
        replicas = [
            RedisBudget(client, keys, table, clock=clock, server_time=False) for client in clients
        ]
        try:
            played = await play(schedule, list(replicas), clock)
            assert not any(r.degraded for r in replicas)  # shared through Redis all along
            return played
        finally:
            await delete_prefix(clients[0], keys.prefix)
            for client in clients:
                await client.aclose()

    check(schedule, run(scenario))


@window_settings(examples=400)
@given(schedule=schedules())
def test_one_process_sharing_a_local_window_never_exceeds_the_platforms_limit(
    schedule: Schedule,
) -> None:
    async def scenario() -> Played:
        clock = SteppedClock()
        table = LimitTable({SCOPE: Window(schedule.count, schedule.per_ms / 1000)})
        shared = LocalBudget(table, clock)
        return await play(schedule, [shared] * schedule.processes, clock)

    check(schedule, run(scenario))


def run(scenario: Callable[[], Awaitable[Played]]) -> Played:
    async def bounded() -> Played:
        return await asyncio.wait_for(scenario(), 30)

    return asyncio.run(bounded())
