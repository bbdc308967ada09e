"""Starts the Discord adapter: log in, connect the gateway, sync the commands,
finish the replies of processes that died (``bots.discord.finalise``), answer
the messages that draining processes handed over, and catch up on the ones
sent while no process was connected (``bots.discord.catchup``).

Shutting down takes three steps, so that no event is lost: ``stop_intake``
(the bot drains: the gateway stays open, new messages are handed over to the
next process of their shard, a new ``/ask`` is told to ask again), then the
caller drains the replies in flight (``ActiveReplies.drain``), then ``close``
(event handlers finish handing over, then the gateway closes). Discord never
redelivers an event, so a gateway closed any earlier would drop what arrives
during the drain. What arrives after it closed, before the next process
connects, that process catches up on from the channels' cursors, written one
last time once the gateway is closed.

Start-up refuses to run half-configured, with one line saying what to fix: a
token Discord rejects, or MESSAGE_CONTENT forced ``on`` for an application
that doesn't have it. With ``DISCORD_MESSAGE_CONTENT=auto`` a missing intent
is said loudly and the bot runs without it (mentions, replies that ping it and
DMs still work; auto-reply channels only see messages that mention it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bots.discord.bot import DiscordBot
from bots.discord.client import (
    DiscordRules,
    granted_message_content,
    intents_for,
    make_client,
    pointed_at,
    wants_message_content,
)
from bots.discord.commands import build_tree, sync_commands
from bots.discord.finalise import finalise_record
from bots.discord.guard import GuardedPacing, InvalidRequestGuard
from bots.discord.handover import PLATFORM
from bots.discord.ratelimits import RateLimitLearner
from bots.discord.settings import DiscordSettings
from core.config import ConfigError, Settings, Unavailable
from core.llm import LLMClient
from core.reply import FinalRetry
from core.service import ActiveReplies, Responder, outcome_metric
from core.state import State
from core.state.inflight import Finalise, InflightRecord
from core.state.learned import AdaptiveLimits
from core.telemetry.metrics import ChatrelayMetrics

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 1.0
"""Seconds replies still streaming at the adapter's own exit get to end by themselves."""
SHUTDOWN_FINALISE = 10.0
"""Seconds replies interrupted by the adapter's own exit get to show it."""
SETTLE = 5.0
"""Seconds event handlers get to hand over (or answer) at ``close`` before the gateway closes."""
PICKUP_INTERVAL = 2.0
"""Seconds between two looks for messages handed over by draining processes."""

PORTAL_HINT = "Developer Portal → your application → Bot → Privileged Gateway Intents"


@dataclass
class DiscordService:
    """A connected Discord adapter."""

    client: discord.AutoShardedClient
    bot: DiscordBot
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
        self.bot.begin_draining()
        if not self._draining:
            self._draining = True
            if self.pickup is not None:
                self.pickup.cancel()  # once: it then waits for the answers it started

    async def close(self, within: float = SETTLE) -> None:
        """After the drain: give event handlers ``within`` seconds to finish handing
        over (messages arrive until the very end), then close the gateway. Call
        ``stop_intake`` and drain the replies first."""
        await self.stop_intake()
        await self.bot.settle(within)
        if self.pickup is not None:
            await asyncio.wait({self.pickup}, timeout=within)
        await self.client.close()
        await asyncio.gather(self.connection, return_exceptions=True)
        await self.bot.catchup.aclose()  # the last cursors, now that no event can come


@asynccontextmanager
async def discord_app(
    settings: DiscordSettings,
    core: Settings,
    state: State,
    llm: LLMClient,
    rules: DiscordRules,
    *,
    metrics: ChatrelayMetrics | None = None,
    active: ActiveReplies | None = None,
    retry: FinalRetry | None = None,
    guild_ready_timeout: float = 2.0,
) -> AsyncIterator[DiscordService]:
    """The adapter, connected and ready, with its orphan sweeper running; closed on exit.

    Replies still streaming at exit (the caller did not drain ``active``) are
    stopped as interrupted and shown so before the client closes. ``retry``: how
    long a reply retries a final frame itself before leaving it to the in-flight
    registry (the engine's default when None).
    Raises ``ConfigError`` when Discord refuses the token or a required intent."""
    own_active = active is None
    replies = ActiveReplies() if active is None else active
    limits = _adaptive_limits(state, settings)
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
            client = await _logged_in(settings, rules, learner, guild_ready_timeout)
            connection: asyncio.Task[None] | None = None
            bot: DiscordBot | None = None
            try:
                pacing = GuardedPacing(min_interval=settings.discord_edit_interval, guard=guard)
                bot = DiscordBot(
                    client=client,
                    settings=settings,
                    core=core,
                    state=state,
                    responder=Responder(
                        state, llm, pacing=pacing, metrics=metrics, active=replies, retry=retry
                    ),
                    rules=rules,
                    on_intake=outcome_metric(metrics, "discord") if metrics is not None else None,
                )
                bot.register()
                tree = build_tree(client, bot, settings)
                if client.shard_count is None:
                    # A known count makes discord.py connect to DISCORD_GATEWAY_URL rather
                    # than to the address /gateway/bot names.
                    client.shard_count, _, _ = await client.http.get_bot_gateway()
                connection = asyncio.create_task(client.connect(reconnect=True))
                await _until_ready(client, connection)
                await sync_commands(tree, settings)
                shards = settings.discord_shard_ids or range(client.shard_count or 1)
                pickup = asyncio.create_task(
                    state.deferred.run_pickup(
                        PLATFORM, [str(s) for s in shards], bot.answer_handed_over, PICKUP_INTERVAL
                    )
                )
                service = DiscordService(client, bot, tree, learner, guard, connection, pickup)
                sweeper = asyncio.create_task(
                    state.inflight.run_sweeper({"discord": _finaliser(client, state)})
                )
                try:
                    yield service
                finally:
                    sweeper.cancel()
                    await asyncio.gather(sweeper, return_exceptions=True)
                    await service.stop_intake()
                    if own_active:
                        await replies.drain(SHUTDOWN_GRACE, finalise_within=SHUTDOWN_FINALISE)
                    await service.close()
            finally:
                await client.close()
                if connection is not None:
                    await asyncio.gather(connection, return_exceptions=True)
                if bot is not None:
                    await bot.catchup.aclose()
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


def _adaptive_limits(state: State, settings: DiscordSettings) -> AdaptiveLimits:
    """The shared budget's limit table, made to learn from Discord's headers (once
    per process: a second adapter on the same state shares what the first learns)."""
    shared = state.shared_budget
    if isinstance(shared.limits, AdaptiveLimits):
        return shared.limits
    learned = state.learned_limits(PLATFORM, ttl=settings.discord_learned_limit_ttl)
    limits = AdaptiveLimits(shared.limits, learned)
    shared.use_limits(limits)
    return limits


async def run_discord(
    settings: DiscordSettings, core: Settings, state: State, llm: LLMClient, rules: DiscordRules
) -> None:
    """Serve Discord until cancelled (or until the gateway connection fails for good)."""
    async with discord_app(settings, core, state, llm, rules) as service:
        log.info(
            "Discord: connected as %s (shards %s of %s)",
            service.client.user,
            settings.discord_shard_ids or "all",
            service.client.shard_count,
        )
        await service.connection


async def _logged_in(
    settings: DiscordSettings,
    rules: DiscordRules,
    learner: RateLimitLearner,
    guild_ready_timeout: float,
) -> discord.AutoShardedClient:
    """A logged-in client whose intents Discord will accept (see the module docstring)."""
    assert settings.discord_bot_token is not None
    token = settings.discord_bot_token.get_secret_value()
    wanted = wants_message_content(settings, rules)
    while True:
        client = make_client(
            settings,
            intents_for(settings, message_content=wanted),
            http_trace=learner.trace_config(),
            guild_ready_timeout=guild_ready_timeout,
        )
        try:
            await client.login(token)
        except discord.LoginFailure:
            await client.close()
            raise ConfigError("invalid setting DISCORD_BOT_TOKEN: Discord refused it") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            await client.close()
            raise Unavailable(
                f"cannot reach Discord at {settings.discord_api_url}: {exc or type(exc).__name__}"
            ) from None
        if not wanted or granted_message_content(client.application_flags):
            break
        await client.close()
        if settings.discord_message_content == "on":
            raise ConfigError(
                "invalid setting DISCORD_MESSAGE_CONTENT: on, but the application does not "
                f"have the MESSAGE_CONTENT intent ({PORTAL_HINT})"
            )
        log.warning(
            "Discord: the auto-reply channels need the MESSAGE_CONTENT intent, which this "
            "application does not have (%s); without it they only see messages that "
            "mention the bot",
            PORTAL_HINT,
        )
        wanted = False
    if not wanted:
        log.info(
            "Discord: running without MESSAGE_CONTENT: the bot reads mentions, replies "
            "that ping it and DMs"
        )
    return client


async def _until_ready(client: discord.Client, connection: asyncio.Task[None]) -> None:
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


__all__ = ["DiscordService", "discord_app", "run_discord"]
