"""All shared state behind one ``async with``, configured from the settings.

A service opens this once at start and hands the pieces to its handlers;
closing it stops the cancel listener, the budget's probe and, in embedded
mode, the redis-server. The in-flight sweeper is not started here because
only the adapters know how to finalise their platform's messages:
``asyncio.create_task(state.inflight.run_sweeper({"slack": finalise}))``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from core.reply.budget import RateLimit
from core.reply.fairness import FairBudget
from core.state.batch import WriteBatch
from core.state.buckets import RedisBudget
from core.state.cancel import CancelBus
from core.state.chains import ReplyChains
from core.state.choices import ModelChoices
from core.state.connection import REDIS_FAILURES, open_redis
from core.state.conversations import Conversations
from core.state.dedupe import Dedupe
from core.state.deferred import DeferredRequests
from core.state.features import MissingFeatures
from core.state.greetings import Greetings
from core.state.handoff import Handoffs
from core.state.inflight import InflightRegistry
from core.state.invalid import InvalidRequests
from core.state.keys import Keys
from core.state.lastseen import LastSeen
from core.state.learned import LEARNED_TTL, LearnedLimits
from core.state.locks import ConversationLocks
from core.state.replicated import ReplicatedWrites
from core.state.resets import ResetMarks
from core.state.settings import StateSettings, load_state_settings
from core.state.topology import RedisClient
from core.state.usage import UsageLedger

SETTLE_ON_EXIT = 10.0
"""Seconds a closing process keeps trying to forget the records of replies that
finished while Redis was away (see ``InflightRegistry.flush``)."""


@dataclass(frozen=True, slots=True)
class State:
    settings: StateSettings
    redis: RedisClient
    keys: Keys
    conversations: Conversations
    budget: FairBudget
    """Every platform call's budget: ``shared_budget``'s slots, handed within
    this process to the most urgent call first (``core.reply.fairness``)."""
    shared_budget: RedisBudget
    """The limits every replica shares (and learns into)."""
    dedupe: Dedupe
    locks: ConversationLocks
    cancel: CancelBus
    inflight: InflightRegistry
    usage: UsageLedger
    deferred: DeferredRequests
    handoffs: Handoffs
    """Threads a human agent took over (one per process, shared by its adapters)."""
    chains: ReplyChains
    """Which reply chain a message belongs to (never raises for Redis)."""
    last_seen: LastSeen
    """The newest message each channel showed a process (catching up)."""
    resets: ResetMarks
    choices: ModelChoices
    greetings: Greetings
    missing_features: MissingFeatures

    def learned_limits(self, platform: str, *, ttl: float = LEARNED_TTL) -> LearnedLimits:
        """``platform``'s rate limits learnt from its headers, shared by replicas."""
        return LearnedLimits(self.redis, self.keys, platform, ttl=ttl)

    def invalid_requests(self, platform: str) -> InvalidRequests:
        """The shared sliding count of ``platform``'s invalid requests."""
        return InvalidRequests(self.redis, self.keys, platform)


@contextlib.asynccontextmanager
async def open_state(
    settings: StateSettings | None = None, defaults: Mapping[str, RateLimit] | None = None
) -> AsyncIterator[State]:
    """Connect (or embed), build every piece, and tear it all down on exit.

    ``defaults``: the platforms' default rate limits (scope pattern -> limit),
    which ``RATE_LIMITS`` overrides (``StateSettings.limit_table``).

    Raises ``core.config.ConfigError`` for bad settings and
    ``RedisUnavailable`` / ``EmbeddedRedisError`` when there is no Redis to use.
    """
    settings = settings or load_state_settings()
    topology = settings.topology
    async with open_redis(topology, settings.state_dir, settings.redis_max_connections) as redis:
        keys = Keys(settings.redis_prefix, cluster=topology.cluster)
        writes = ReplicatedWrites(
            redis, replicas=settings.wait_replicas, timeout=settings.redis_wait_timeout
        )
        budget = RedisBudget(redis, keys, settings.limit_table(defaults))
        batch = WriteBatch(redis)
        budget.batch = batch  # its acquires carry the in-flight records' writes
        deferred = DeferredRequests(redis, keys)
        try:
            async with CancelBus(redis, keys) as cancel:
                state = State(
                    settings=settings,
                    redis=redis,
                    keys=keys,
                    conversations=Conversations(
                        redis,
                        keys,
                        ttl=settings.conversation_ttl,
                        max_turns=settings.conversation_max_turns,
                        max_chars=settings.turn_max_chars,
                        context_tokens=settings.context_tokens,
                    ),
                    budget=FairBudget(budget),
                    shared_budget=budget,
                    dedupe=Dedupe(redis, keys, ttl=settings.dedupe_ttl, writes=writes),
                    locks=ConversationLocks(
                        redis,
                        keys,
                        ttl=settings.lock_ttl,
                        wait=settings.lock_wait,
                        writes=writes,
                    ),
                    cancel=cancel,
                    inflight=InflightRegistry(
                        redis,
                        keys,
                        heartbeat=settings.inflight_heartbeat,
                        timeout=settings.inflight_timeout,
                        final_retry_for=settings.inflight_final_retry_for,
                        deferred=deferred,
                    ),
                    usage=UsageLedger(
                        redis,
                        keys,
                        user_quota=settings.quota_user_daily_tokens,
                        channel_quota=settings.quota_channel_daily_tokens,
                    ),
                    deferred=deferred,
                    handoffs=Handoffs(redis, keys),
                    chains=ReplyChains(redis, keys, ttl=settings.conversation_ttl),
                    last_seen=LastSeen(redis, keys),
                    resets=ResetMarks(redis, keys, ttl=settings.conversation_ttl),
                    choices=ModelChoices(redis, keys),
                    greetings=Greetings(redis, keys),
                    missing_features=MissingFeatures(redis, keys),
                )
                state.inflight.batch = batch  # records ride along with acquires,
                state.locks.batch = batch  # and so do lock extensions
                try:
                    yield state
                finally:
                    await state.inflight.flush(within=SETTLE_ON_EXIT)
        finally:
            with contextlib.suppress(*REDIS_FAILURES):
                await batch.aclose()
            await budget.aclose()
