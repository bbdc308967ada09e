"""Points the real discord.py at a ``FakeDiscord`` (REST base and gateway URL)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import discord.gateway
import discord.http
import yarl

from tests.fakes.discord_server.fake import FakeDiscord


@contextlib.contextmanager
def point_discord_py_at(fake: FakeDiscord) -> Iterator[None]:
    """Points discord.py's REST base and default gateway at ``fake``; restores them after.

    Both are class attributes read at call time (``Route.BASE`` when a Route is built,
    ``DiscordWebSocket.DEFAULT_GATEWAY`` when connecting), so every client created
    inside the block (and any that keeps running in it) talks to the fake.
    """
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
