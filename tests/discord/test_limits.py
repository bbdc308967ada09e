"""Discord at load: limits learnt from the headers pace every replica, and the
invalid-request guard counts 401/403/429 (not shared-scope 429s) and slows every
replica down as they add up. The real discord.py talks to the fake Discord;
budgets, learnt limits and counts live in a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import discord
import pytest
from redis.asyncio import Redis

from bots.discord.api import make_client, pointed_at
from bots.discord.limits import (
    PAUSE_RECHECK,
    PAUSED,
    SLOW,
    GuardedPacing,
    InvalidRequestGuard,
    RateLimitLearner,
    channel_scope,
)
from bots.discord.settings import load_discord_settings
from core.clock import Clock, FakeClock
from core.reply.budget import Limit as BudgetLimit
from core.reply.budget import LimitTable
from core.state.buckets import RedisBudget
from core.state.invalid import InvalidRequests
from core.state.keys import Keys
from core.state.learned import AdaptiveLimits, LearnedLimits
from core.state.store import State
from core.telemetry.metrics import ChatrelayMetrics
from tests.discord.conftest import StartBot, answer, bot_messages, eventually, finished, stream
from tests.fakes.discord_server import (
    ALICE,
    CHANNEL_ID,
    SEND_MESSAGE,
    FakeDiscord,
    Limit,
)
from tests.fakes.llm_server import FakeLLMServer
from tests.state.conftest import second_client

__all__ = ["second_client"]

SCOPE = channel_scope(CHANNEL_ID)
FORBIDDEN = {"message": "Missing Permissions", "code": 50013}


@dataclass
class Replica:
    """One process's view: a discord.py client whose answers feed its learner."""

    client: discord.AutoShardedClient
    budget: RedisBudget
    limits: AdaptiveLimits
    learned: LearnedLimits
    learner: RateLimitLearner
    guard: InvalidRequestGuard
    metrics: ChatrelayMetrics

    async def send(self, text: str, channel: int = CHANNEL_ID) -> discord.Message:
        """A channel message, after its budget, as a reply's call would be."""
        await self.budget.acquire(channel_scope(channel))
        return await self.client.get_partial_messageable(channel).send(text)


@contextlib.asynccontextmanager
async def replica(
    fake: FakeDiscord,
    redis: Redis,
    keys: Keys,
    limit: BudgetLimit,
    *,
    slow_at: int = 1_000,
    pause_at: int = 5_000,
    clock: Clock | None = None,
) -> AsyncIterator[Replica]:
    learned = LearnedLimits(redis, keys, "discord")
    limits = AdaptiveLimits(LimitTable({"discord:channel:*": limit}), learned)
    budget = RedisBudget(redis, keys, limits)
    metrics = ChatrelayMetrics()
    guard = InvalidRequestGuard(
        InvalidRequests(redis, keys, "discord", window=60, slot=10, clock=clock),
        limits,
        slow_at=slow_at,
        pause_at=pause_at,
        metrics=metrics,
    )
    learner = RateLimitLearner(budget, learned=learned, limits=limits, guard=guard)
    settings = load_discord_settings(
        discord_bot_token=fake.bot_token,
        discord_api_url=fake.api_url,
        discord_gateway_url=fake.gateway_url,
    )
    with pointed_at(settings.discord_api_url, settings.discord_gateway_url):
        client = make_client(settings, discord.Intents.none(), http_trace=learner.trace_config())
        try:
            await client.login(fake.bot_token)
            yield Replica(client, budget, limits, learned, learner, guard, metrics)
        finally:
            await client.close()
            await budget.aclose()


async def test_a_tighter_bucket_in_the_headers_paces_every_replica_without_a_429(
    fake: FakeDiscord, redis: Redis, second_client: Redis, keys: Keys
) -> None:
    """The budget assumes the channel takes 5 calls per half second (4, burst 2);
    Discord's headers say 3. One replica's first answer teaches both: 12 calls from
    two replicas at once then meet no 429."""
    fake.limits.channel_messages = Limit(3, 0.5)
    assumed = BudgetLimit(4, 0.5, burst=2)
    async with (
        replica(fake, redis, keys, assumed) as a,
        replica(fake, second_client, keys, assumed) as b,
    ):
        await a.send("first")
        assert a.limits.lookup(SCOPE) == BudgetLimit(2, 0.5)  # one under Discord's 3
        await b.learned.refresh()  # what b's refresher does every few seconds
        assert b.limits.lookup(SCOPE) == BudgetLimit(2, 0.5)

        async def burst(r: Replica, name: str) -> None:
            for n in range(6):
                await r.send(f"{name}{n}")

        async with asyncio.timeout(15):
            await asyncio.gather(burst(a, "a"), burst(b, "b"))
    assert len(fake.channel_messages(CHANNEL_ID)) == 13
    assert fake.natural_429s() == 0
    assert a.learner.rate_limited == b.learner.rate_limited == 0
    assert await redis.hlen(keys.learned_limits("discord")) == 1  # the send bucket


async def test_a_looser_bucket_never_loosens_the_configured_limit(
    fake: FakeDiscord, redis: Redis, keys: Keys
) -> None:
    fake.limits.channel_messages = Limit(50, 0.5)
    async with replica(fake, redis, keys, BudgetLimit(4, 5)) as a:
        await a.send("hello")
        assert a.limits.lookup(SCOPE) == BudgetLimit(4, 5)
        assert a.learned.entries() == {}
    assert await redis.exists(keys.learned_limits("discord")) == 0


async def test_401_403_and_429_count_as_invalid_requests_but_shared_429s_do_not(
    fake: FakeDiscord, redis: Redis, keys: Keys
) -> None:
    async with replica(fake, redis, keys, BudgetLimit(4, 1)) as a:
        fake.fail_next("POST", r"channels/\d+/messages$", status=401)
        with pytest.raises(discord.HTTPException):
            await a.send("unauthorised")
        fake.fail_next(
            "POST",
            r"channels/\d+/messages$",
            403,
            {"message": "Missing Permissions", "code": 50013},
        )
        with pytest.raises(discord.Forbidden):
            await a.send("forbidden")
        fake.faults.add(SEND_MESSAGE, "429", retry_after=0.05)
        await a.send("after a 429")  # discord.py retries it
        fake.limits.channel_messages = Limit(5, 1.0, scope="shared")
        fake.faults.add(SEND_MESSAGE, "429", retry_after=0.05)
        await a.send("after a shared 429")
        assert a.learner.rate_limited == 2
    assert fake.invalid_requests == 3  # the fake's own tally of what Discord would count
    assert a.learner.invalid == 3
    counted = a.metrics.discord_invalid
    assert (counted.value("401"), counted.value("403"), counted.value("429")) == (1, 1, 1)
    assert a.guard.count == 3
    assert await InvalidRequests(redis, keys, "discord").count() == 3  # shared
    rendered = a.metrics.registry.render()
    assert 'chatrelay_discord_invalid_requests_total{status="429"} 1' in rendered
    assert "chatrelay_discord_invalid_requests_window 3" in rendered


async def test_crossing_the_thresholds_slows_every_replica_then_pauses_updates(
    fake: FakeDiscord,
    redis: Redis,
    second_client: Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two replicas, thresholds 2 and 4: two 403s on one replica halve every
    Discord limit on both (calls then go half as often), two more pause ordinary
    updates on both, and when the window has slid past them both are back to
    normal. Each change is logged once."""
    caplog.set_level(logging.INFO, logger="bots.discord.limits")
    clock = FakeClock(1000.0)  # the count's window, stepped instead of slept through
    fake.limits.channel_messages = Limit(50, 1.0)  # nothing to learn: only the guard acts
    limit = BudgetLimit(8, 1)
    async with (
        replica(fake, redis, keys, limit, slow_at=2, pause_at=4, clock=clock) as a,
        replica(fake, second_client, keys, limit, slow_at=2, pause_at=4, clock=clock) as b,
    ):
        for _ in range(2):
            fake.fail_next("POST", r"channels/\d+/messages$", 403, FORBIDDEN)
            with pytest.raises(discord.Forbidden):
                await a.send("nope")
        assert a.guard.level == SLOW
        await b.guard.refresh()  # what b's watcher does every few seconds
        assert b.guard.level == SLOW
        assert b.limits.lookup(SCOPE) == BudgetLimit(4, 1)

        before = len(fake.calls)
        for n in range(4):
            await b.send(f"slowed {n}")
        times = [c.time for c in fake.calls[before:] if c.method == "POST"]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert len(gaps) == 3 and min(gaps) >= 0.24  # one call per 0.25 s, not per 0.125

        pacing = GuardedPacing(min_interval=0.2, guard=b.guard)
        assert pacing.due(10.0, 9.0, 50) == 0.0  # slowed, not paused: updates go
        for _ in range(2):
            fake.fail_next("POST", r"channels/\d+/messages$", 403, FORBIDDEN)
            with pytest.raises(discord.Forbidden):
                await a.send("nope")
        await b.guard.refresh()
        assert a.guard.level == b.guard.level == PAUSED
        assert pacing.due(10.0, 9.0, 50) >= PAUSE_RECHECK

        await clock.advance(75)  # the window slid past every invalid request
        await a.guard.refresh()
        await b.guard.refresh()
        assert a.guard.level == b.guard.level == 0
        assert b.limits.lookup(SCOPE) == limit
        assert pacing.due(10.0, 9.0, 50) == 0.0
    guard = [r for r in caplog.records if r.name == "bots.discord.limits"]
    warnings = [r for r in guard if r.levelno == logging.WARNING]
    assert len(warnings) == 4  # slow and paused, on each replica
    assert all("invalid requests" in r.getMessage() for r in warnings)
    assert len([r for r in guard if r.levelno == logging.INFO]) == 2  # normal again


async def test_paused_updates_still_deliver_the_first_and_final_frames(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
) -> None:
    """With the shared count past ``DISCORD_INVALID_PAUSE``, a reply shows its first
    text, then nothing until its final frame, which carries every word."""
    await InvalidRequests(state.redis, state.keys, "discord").add(2)
    pieces = ["Paused ", *(f"word{i} " for i in range(15)), "end."]
    llm_server.enqueue(stream(pieces, delay=0.05))
    async with start_bot(discord_invalid_slow=1, discord_invalid_pause=2) as service:
        await eventually(lambda: service.guard.paused)
        await fake.inject_message(CHANNEL_ID, "question", ALICE, mentions_bot=True)
        await eventually(lambda: [m for m in bot_messages(fake, CHANNEL_ID) if finished(m)])
    [reply] = bot_messages(fake, CHANNEL_ID)
    assert answer(reply) == "".join(pieces)
    assert len(reply.edits) == 1  # the final frame alone; no ordinary update
