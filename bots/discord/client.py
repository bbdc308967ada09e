"""The discord.py client: addresses, intents and shards.

**Intents** are kept to what the bot uses: guilds (channels, permissions,
threads), guild messages (mentions, replies, auto-reply channels) and direct
messages when DMs are on. MESSAGE_CONTENT is privileged (Discord must enable
it for the application, and verified bots must be approved for it): without
it the bot still reads mentions, DMs and replies that ping it, so it is asked
for only when an auto-reply channel needs every message's text
(``DISCORD_MESSAGE_CONTENT=auto``), or when forced ``on``.

**Shards**: ``AutoShardedClient`` runs ``DISCORD_SHARD_IDS`` of
``DISCORD_SHARD_COUNT`` in one process; several processes split the shards
between them, and exactly one runs shard 0, which alone receives DMs.

**Addresses**: discord.py reads its REST base and gateway from class
attributes, so ``pointed_at`` sets them for the process while the bot runs
(``DISCORD_API_URL`` for a REST proxy such as nirn-proxy or a test fake,
``DISCORD_GATEWAY_URL`` for the gateway).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from bots.discord.settings import DiscordSettings
from core.rules import RulesSource

log = logging.getLogger(__name__)


class DiscordRules(RulesSource, Protocol):
    """The rules file as the adapter reads it: ``ChannelRules`` or ``LiveRules``."""

    def auto_channels(self, platform: str) -> list[str]: ...


def wants_message_content(settings: DiscordSettings, rules: DiscordRules) -> bool:
    """Decided at start: intents are fixed for a gateway session, so an auto-reply
    channel added to the rules later needs a restart to be read in full."""
    if settings.discord_message_content == "auto":
        every_channel_auto = rules.policy("discord", "").mode == "auto"  # [defaults]
        return every_channel_auto or bool(rules.auto_channels("discord"))
    return settings.discord_message_content == "on"


def intents_for(settings: DiscordSettings, *, message_content: bool) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = settings.discord_dms
    intents.message_content = message_content
    return intents


def granted_message_content(flags: discord.ApplicationFlags) -> bool:
    """Whether the Developer Portal has MESSAGE_CONTENT enabled for the application."""
    return flags.gateway_message_content or flags.gateway_message_content_limited


def make_client(
    settings: DiscordSettings,
    intents: discord.Intents,
    *,
    http_trace: aiohttp.TraceConfig | None = None,
    guild_ready_timeout: float = 2.0,
) -> discord.AutoShardedClient:
    """A client that mentions nobody unless a call says otherwise (every call of
    chatrelay also passes its own ``allowed_mentions``)."""
    options: dict[str, Any] = {}
    if settings.discord_shard_ids:
        options["shard_ids"] = settings.discord_shard_ids
    if http_trace is not None:
        options["http_trace"] = http_trace
    return discord.AutoShardedClient(
        intents=intents,
        shard_count=settings.discord_shard_count,
        allowed_mentions=discord.AllowedMentions.none(),
        guild_ready_timeout=guild_ready_timeout,
        chunk_guilds_at_startup=False,
        **options,
    )


@contextlib.contextmanager
def pointed_at(api_url: str, gateway_url: str) -> Iterator[None]:
    """discord.py's REST base and gateway for the duration of the block."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
