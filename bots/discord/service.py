"""The Discord platform (``core.service.platform``): log in, connect the gateway,
sync the commands, finish the replies of processes that died
(``bots.discord.finalise``), answer the messages that draining processes handed
over (``bots.discord.handover``), and catch up on the ones sent while no
process was connected (``CatchUp``). It receives events over the gateway only:
it mounts no HTTP endpoint.

Shutting down takes three steps, so that no event is lost: ``stop_intake``
(the bot drains: the gateway stays open, new messages are handed over to the
next process of their shard, a new ``/ask`` is told to ask again), then the
caller drains the replies in flight (``ActiveReplies.drain``), then ``close``
(event handlers finish handing over, then the gateway closes). Discord never
redelivers an event, so a gateway closed any earlier would drop what arrives
during the drain. What arrives after it closed, before the next process
connects, that process catches up on from the channels' cursors, written one
last time once the gateway is closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands

from bots.discord.api import PORTAL_HINT, logged_in, pointed_at
from bots.discord.controls import ChannelModels, Controls, build_tree, sync_commands
from bots.discord.conversations import Conversations
from bots.discord.events import Access, Cursors, Events
from bots.discord.finalise import finalise_record
from bots.discord.handover import answer_handed_over
from bots.discord.limits import (
    DEFAULT_LIMITS,
    GLOBAL_SCOPE,
    GuardedPacing,
    InvalidRequestGuard,
    RateLimitLearner,
    adaptive_limits,
)
from bots.discord.replies import Replies
from bots.discord.settings import PLATFORM, DiscordSettings
from core.config import ConfigError
from core.reply import Budget, RateLimit
from core.service import (
    IntakeOutcome,
    IntakePolicy,
    Routes,
    Services,
    outcome_metric,
)
from core.state import REDIS_FAILURES, State
from core.state.inflight import Finalise, InflightRecord

log = logging.getLogger(__name__)

SETTLE = 5.0
"""Seconds event handlers get to hand over (or answer) at ``close`` before the gateway closes."""
PICKUP_INTERVAL = 2.0
"""Seconds between two looks for messages handed over by draining processes."""


@dataclass
class DiscordService:
    """A connected Discord adapter."""

    client: discord.AutoShardedClient
    events: Events
    replies: Replies
    controls: Controls
    catchup: CatchUp
    tree: app_commands.CommandTree[Any]
    learner: RateLimitLearner
    guard: InvalidRequestGuard
    connection: asyncio.Task[None]
    """The gateway connection; it ends when the client closes or gives up."""
    pickup: asyncio.Task[None] | None = None
    """Answers the messages draining processes of this process's shards handed over."""
    _draining: bool = field(default=False, init=False)

    async def connected(self) -> bool:
        """Readiness: every shard of this process is connected."""
        shards = self.client.shards.values()
        return self.client.is_ready() and all(not shard.is_closed() for shard in shards)

    async def stop_intake(self) -> None:
        """Start draining (SIGTERM): the gateway stays open, because an event that
        reaches no process is lost for good, and the bot hands new messages over to
        the next process of their shard and tells new ``/ask``s to ask again. No more
        hand-overs are taken here; the ones being answered finish."""
        self.replies.begin_draining()
        if not self._draining:
            self._draining = True
            if self.pickup is not None:
                self.pickup.cancel()  # once: it then waits for the answers it started

    async def close(self, within: float = SETTLE) -> None:
        """After the drain: give event handlers ``within`` seconds to finish handing
        over (messages arrive until the very end), then close the gateway. Call
        ``stop_intake`` and drain the replies first."""
        await self.stop_intake()
        await self.replies.settle(within)
        if self.pickup is not None:
            await asyncio.wait({self.pickup}, timeout=within)
        await self.client.close()
        await asyncio.gather(self.connection, return_exceptions=True)
        await self.catchup.aclose()  # the last cursors, now that no event can come


class DiscordPlatform:
    """Discord, for ``chatrelay run`` (``core.service.platform.Platform``)."""

    def __init__(self, settings: DiscordSettings, *, guild_ready_timeout: float = 2.0) -> None:
        self.settings = settings
        self.guild_ready_timeout = guild_ready_timeout

    @property
    def name(self) -> str:
        return PLATFORM

    @property
    def configured(self) -> bool:
        return self.settings.configured

    def default_limits(self) -> Mapping[str, RateLimit]:
        return DEFAULT_LIMITS

    def mount(self, routes: Routes, draining: Callable[[], bool]) -> None:
        """Nothing to mount: Discord's events come over the gateway."""

    def serve(self, services: Services) -> AbstractAsyncContextManager[DiscordService]:
        """Connected and ready, with its orphan sweeper running, until the block
        ends; then it stops its intake and closes (the caller drains between).
        Raises ``ConfigError`` when Discord refuses the token or a required intent."""
        return self._serve(services)

    @asynccontextmanager
    async def _serve(self, services: Services) -> AsyncIterator[DiscordService]:
        settings, state, metrics = self.settings, services.state, services.metrics
        limits = adaptive_limits(state, settings)
        guard = InvalidRequestGuard(
            state.invalid_requests(PLATFORM),
            limits,
            slow_at=settings.discord_invalid_slow,
            pause_at=settings.discord_invalid_pause,
            metrics=metrics,
        )
        refresh = settings.discord_limits_refresh
        watchers = [asyncio.create_task(guard.run(refresh))]
        if limits.learned is not None:
            watchers.append(asyncio.create_task(limits.learned.run_refresh(refresh)))
        try:
            with pointed_at(settings.discord_api_url, settings.discord_gateway_url):
                learner = RateLimitLearner(
                    state.budget, learned=limits.learned, limits=limits, guard=guard
                )
                if metrics is not None:
                    learner.on_error = metrics.discord_api_error
                client = await logged_in(
                    settings,
                    services.rules,
                    http_trace=learner.trace_config(),
                    guild_ready_timeout=self.guild_ready_timeout,
                )
                connection: asyncio.Task[None] | None = None
                catchup: CatchUp | None = None
                try:
                    pacing = GuardedPacing(min_interval=settings.discord_edit_interval, guard=guard)
                    events, replies, controls = _rooms(client, settings, services, pacing)
                    catchup = CatchUp(
                        client,
                        events.cursors,
                        state.budget,
                        take=events.take_caught_up,
                        taken=events.intake.taken,
                    )
                    client.event(events.on_message)
                    client.event(controls.on_interaction)
                    client.event(catchup.on_shard_ready)
                    tree = build_tree(client, controls, settings)
                    if client.shard_count is None:
                        # A known count makes discord.py connect to DISCORD_GATEWAY_URL
                        # rather than to the address /gateway/bot names.
                        client.shard_count, _, _ = await client.http.get_bot_gateway()
                    connection = asyncio.create_task(client.connect(reconnect=True))
                    await _until_ready(client, connection)
                    await sync_commands(tree, settings)
                    shards = settings.discord_shard_ids or range(client.shard_count or 1)
                    pickup = asyncio.create_task(
                        state.deferred.run_pickup(
                            PLATFORM,
                            [str(s) for s in shards],
                            functools.partial(answer_handed_over, replies),
                            PICKUP_INTERVAL,
                        )
                    )
                    service = DiscordService(
                        client,
                        events,
                        replies,
                        controls,
                        catchup,
                        tree,
                        learner,
                        guard,
                        connection,
                        pickup,
                    )
                    sweeper = asyncio.create_task(
                        state.inflight.run_sweeper({PLATFORM: _finaliser(client, state)})
                    )
                    try:
                        yield service
                    finally:
                        sweeper.cancel()
                        await asyncio.gather(sweeper, return_exceptions=True)
                        await service.stop_intake()
                        await service.close()
                finally:
                    await client.close()
                    if connection is not None:
                        await asyncio.gather(connection, return_exceptions=True)
                    if catchup is not None:
                        await catchup.aclose()
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)


def _rooms(
    client: discord.Client, settings: DiscordSettings, services: Services, pacing: GuardedPacing
) -> tuple[Events, Replies, Controls]:
    """The adapter's rooms, wired to one another and to the shared services."""
    state, metrics = services.state, services.metrics
    conversations = Conversations(client, state, settings)
    models = ChannelModels(state.choices, settings.discord_models)
    access = Access.from_settings(settings)
    policy = IntakePolicy(state, services.core.system_prompt)
    replies = Replies(
        client=client,
        settings=settings,
        state=state,
        responder=services.responder,
        policy=policy,
        models=models,
        conversations=conversations,
        pacing=pacing,
    )
    events = Events(
        client=client,
        settings=settings,
        state=state,
        rules=services.rules,
        policy=policy,
        conversations=conversations,
        replies=replies,
        access=access,
        on_intake=outcome_metric(metrics, PLATFORM) if metrics is not None else None,
    )
    controls = Controls(
        settings=settings, rules=services.rules, access=access, models=models, replies=replies
    )
    return events, replies, controls


async def _until_ready(client: discord.Client, connection: asyncio.Task[None]) -> None:
    """Until every shard of ``connection`` is ready; ``ConfigError`` when Discord
    refuses an intent there."""
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        await asyncio.wait({ready, connection}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
    if not connection.done():
        return
    try:
        connection.result()
    except discord.PrivilegedIntentsRequired:
        raise ConfigError(
            "Discord refused the MESSAGE_CONTENT intent: enable it in the "
            f"{PORTAL_HINT}, or set DISCORD_MESSAGE_CONTENT=off"
        ) from None
    raise RuntimeError("the Discord gateway connection ended before it was ready")


def _finaliser(client: discord.Client, state: State) -> Finalise:
    async def finalise(record: InflightRecord) -> None:
        await finalise_record(client, state.budget, record)

    return finalise


# -- catching up -----------------------------------------------------------------

PAGES = 5
"""Pages of 100 messages fetched per channel at most: an hour's gap in a busy
auto-reply channel is worth catching up, an unbounded history is not."""
CHANNELS = 200
"""Channels caught up per shard, the most recently active first."""

Take = Callable[[discord.Message], Coroutine[Any, Any, IntakeOutcome]]
"""The intake of one message (``Events.take_caught_up``)."""


class CatchUp:
    """Messages sent while no process was connected, answered after a restart.

    Discord delivers a message to the gateway sessions open when it is sent, and
    never again. A deploy that closes the old process's gateway before the new
    one connects (or a crash, or a shard whose session could not be resumed)
    leaves a gap: a mention sent then reaches nobody. Resuming the old session in
    the new process would replay the gap, but discord.py starts every process
    with a fresh IDENTIFY and offers no supported way to hand a session over, so
    chatrelay catches up from the channels instead.

    When a shard becomes ready on a new session (start-up, or a reconnect that
    could not resume) the cursors of its channels (``bots.discord.events.Cursors``)
    are read back and each channel's messages after its cursor fetched (``GET
    /channels/{id}/messages?after=…&limit=100``, a few pages at most, each paid
    from the bot's global budget) and fed, oldest first, through the normal
    intake. The intake claims every message in dedupe before answering, so a
    message the previous process (or a live process of a rolling deploy)
    already answered is not answered again, and one that was not for the bot is
    ignored again.
    """

    def __init__(
        self,
        client: discord.Client,
        cursors: Cursors,
        budget: Budget,
        *,
        take: Take,
        taken: Callable[[int], bool],
    ) -> None:
        """``take`` feeds a caught-up message through the intake; ``taken`` says
        whether this process already took a message (live), so it is not
        taken twice here."""
        self._client = client
        self._cursors = cursors
        self._budget = budget
        self._take = take
        self._taken = taken
        self._tasks: set[asyncio.Task[object]] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self.caught_up = 0
        """Messages fed to the intake by catch-ups (whatever became of them)."""
        self.runs = 0
        """Catch-ups finished (one per shard per new session)."""

    async def on_shard_ready(self, shard_id: int) -> None:
        """A shard connected on a new session: what was sent while it was away
        reached no process, so catch up on it, in the background."""
        self._spawn(self.catch_up(shard_id))

    async def catch_up(self, shard_id: int) -> int:
        """Feed the intake every message sent after the cursors of the shard's
        channels; returns how many. One catch-up per shard at a time."""
        lock = self._locks.setdefault(shard_id, asyncio.Lock())
        async with lock:
            try:
                return await self._shard(shard_id)
            finally:
                self.runs += 1

    async def _shard(self, shard_id: int) -> int:
        try:
            channels = await self._cursors.recent(shard_id, CHANNELS)
        except REDIS_FAILURES as exc:
            log.warning("Discord: can't catch up shard %s, no cursors: %s", shard_id, exc)
            return 0
        fed = 0
        for seen in channels:
            channel_id = int(seen.channel)
            self._cursors.follow(channel_id)
            try:
                fed += await self._channel(channel_id, int(seen.message))
            except (discord.NotFound, discord.Forbidden) as exc:
                log.info("Discord: channel %s can't be read any more: %s", channel_id, exc)
                await self._cursors.forget(shard_id, seen.channel)
            except discord.HTTPException as exc:
                log.warning("Discord: could not catch up channel %s: %s", channel_id, exc)
        if fed:
            log.info("Discord: caught up %d messages sent while shard %s was away", fed, shard_id)
        return fed

    async def _channel(self, channel_id: int, after_id: int) -> int:
        channel = self._client.get_channel(channel_id)
        if channel is None:
            await self._budget.acquire(GLOBAL_SCOPE)
            channel = await self._client.fetch_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            return 0
        after: discord.abc.Snowflake = discord.Object(after_id)
        fed = 0
        for _ in range(PAGES):
            await self._budget.acquire(GLOBAL_SCOPE)
            page = [m async for m in channel.history(limit=100, after=after, oldest_first=True)]
            for message in page:
                if not self._taken(message.id):
                    fed += 1
                    # Each message on its own, as the gateway's events are: a reply
                    # streaming for a minute must not hold up the messages after it.
                    self._spawn(self._take(message))
            if len(page) < 100:
                break
            after = page[-1]
        self.caught_up += fed
        return fed

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """After the gateway closed: stop catching up, write the last cursors."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._cursors.aclose()


__all__ = ["DiscordPlatform", "DiscordService"]
