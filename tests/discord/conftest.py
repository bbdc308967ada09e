"""A running Discord adapter: the real discord.py against the fake Discord, a fake
model over HTTP and a real Redis. It is served as ``chatrelay run`` serves a
platform (``DiscordPlatform.serve`` with the process's shared services), and
shut down the same way: stop the intake, drain the replies, close.

Discord's windows are scaled down five-fold, the fake's and chatrelay's budget
alike (the channel: 5 per 1 s at the fake, 4 per 1 s with a burst of 2 in the
budget; the same ratio as the defaults against Discord's 5 per 5 s), so the
suite tests the same arithmetic in a fifth of the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bots.discord.format import ZWSP
from bots.discord.limits import DEFAULT_LIMITS
from bots.discord.service import DiscordPlatform, DiscordService
from bots.discord.settings import load_discord_settings
from core.config import load_settings
from core.llm.client import LLMClient
from core.reply.engine import FinalRetry
from core.rules import load_rules
from core.service import ActiveReplies, Responder, Services
from core.state.keys import Keys
from core.state.settings import load_state_settings
from core.state.store import State, open_state
from tests.fakes.discord_server import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    FakeDiscord,
    Limit,
    MessageRecord,
    RateLimits,
)
from tests.fakes.llm_server import FakeResponse
from tests.fakes.streams import chat_stream, split_events
from tests.state.conftest import keys, pausable, redis, redis_url

__all__ = ["keys", "pausable", "redis", "redis_url"]

FAKE_LIMITS = RateLimits(channel_messages=Limit(5, 1.0), interaction_webhook=Limit(5, 0.4))
BUDGET_LIMITS = {"discord:channel:*": "4/1/2", "discord:interaction:*": "4/0.4/2"}

StartBot = Callable[..., AbstractAsyncContextManager[DiscordService]]

SHUTDOWN_GRACE = 1.0
"""Seconds replies still streaming when a test's process ends get to end by themselves."""
SHUTDOWN_FINALISE = 10.0
"""Seconds replies interrupted then get to show it."""


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(limits=FAKE_LIMITS) as server:
        yield server


@pytest.fixture
async def state(redis_url: str, keys: Keys, redis: Redis) -> AsyncIterator[State]:
    settings = load_state_settings(
        redis_url=redis_url,
        redis_prefix=keys.prefix,
        inflight_heartbeat=0.2,
        inflight_timeout=1.0,
        rate_limits=BUDGET_LIMITS,
    )
    async with open_state(settings, defaults=DEFAULT_LIMITS) as opened:
        yield opened


@pytest.fixture
def start_bot(fake: FakeDiscord, state: State, llm: LLMClient, tmp_path: Path) -> StartBot:
    @asynccontextmanager
    async def start(
        channels: str = "",
        retry: FinalRetry | None = None,
        on: State | None = None,
        **overrides: object,
    ) -> AsyncIterator[DiscordService]:
        """A process of the bot; ``on``: its own shared state (another Redis
        connection, e.g. one a test can cut), else the test's."""
        rules_file = tmp_path / "channels.toml"
        rules_file.write_text(channels)
        options: dict[str, object] = {
            "discord_bot_token": fake.bot_token,
            "discord_api_url": fake.api_url,
            "discord_gateway_url": fake.gateway_url,
            "discord_edit_interval": 0.2,
            **overrides,
        }
        settings = load_discord_settings(**options)
        core = load_settings(llm_base_url="http://unused.invalid/v1", llm_model="m")
        rules = load_rules(rules_file)
        shared = state if on is None else on
        active = ActiveReplies()
        services = Services(
            core=core,
            state=shared,
            responder=Responder(shared, llm, active=active, retry=retry),
            rules=rules,
            active=active,
        )
        platform = DiscordPlatform(settings, guild_ready_timeout=0.05)
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(10):  # connected and ready, or fail fast
                app = await stack.enter_async_context(platform.serve(services))
            try:
                yield app
            finally:  # as ``chatrelay run`` ends: stop taking events, drain, close
                await app.stop_intake()
                await active.drain(SHUTDOWN_GRACE, finalise_within=SHUTDOWN_FINALISE)
                await app.close()

    return start


# ------------------------------------------------------------------ helpers


def stream(pieces: list[str], delay: float = 0.02, **kwargs: object) -> FakeResponse:
    return FakeResponse(chunks=split_events(chat_stream(pieces, **kwargs)), chunk_delay=delay)  # type: ignore[arg-type]


def answer(rec: MessageRecord) -> str:
    """The model text a message shows: content (or embed description) without the
    state line, zero-width spaces of neutralised mentions removed."""
    text = rec.embeds[0].get("description", "") if rec.embeds else rec.content
    lines = text.split("\n")
    while lines and lines[-1].startswith("-# "):
        lines.pop()
    return "\n".join(lines).replace(ZWSP, "")


def state_line(rec: MessageRecord) -> str:
    """The last line of a content-mode message (where the reply's state shows)."""
    return rec.content.rsplit("\n", 1)[-1]


def finished(rec: MessageRecord) -> bool:
    """A reply message that stopped changing: past "thinking…", no Stop button, no
    "writing" state."""
    loading = bool(rec.flags & FLAG_LOADING)
    return not loading and rec.components == [] and "writing…" not in rec.content


def bot_messages(fake: FakeDiscord, channel_id: int) -> list[MessageRecord]:
    """The bot's messages in a channel, ephemeral command answers left out."""
    return [
        m
        for m in fake.channel_messages(channel_id)
        if m.author.id == fake.bot.id and not m.flags & FLAG_EPHEMERAL
    ]


def stop_id(rec: MessageRecord) -> str:
    button = rec.components[0]["components"][0]
    assert re.match(r"^chatrelay:stop:[0-9a-f]+:\d+$", button["custom_id"])
    return str(button["custom_id"])


async def eventually(check: Callable[[], object], within: float = 10.0) -> None:
    """Poll a condition (the bot acts on the fake's events asynchronously), bounded.
    ``check`` returns something truthy, or an awaitable of it (a Redis lookup)."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def outcome_of(service: DiscordService, message: MessageRecord, within: float = 10.0) -> str:
    """What the bot made of ``message`` (``core.service.intake``), once it is done
    with it: a test that expects no reply waits for this, not for time to pass."""
    async with asyncio.timeout(within):
        return await service.events.intake.wait(message.id)


def pings_nobody(allowed: dict[str, object] | None, *, replied_user: bool = False) -> bool:
    """``allowed_mentions`` was sent and lets nothing notify (but, at most, the
    author of the message replied to)."""
    if allowed is None or allowed.get("parse") != []:
        return False
    if allowed.get("users") or allowed.get("roles"):
        return False
    return bool(allowed.get("replied_user")) == replied_user


MESSAGE_WRITES = {
    ("POST", "channels/{channel_id}/messages"),
    ("PATCH", "channels/{channel_id}/messages/{message_id}"),
    ("POST", "webhooks/{webhook_id}/{webhook_token}"),
    ("PATCH", "webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"),
}


def message_writes(fake: FakeDiscord) -> list[dict[str, object]]:
    """The bodies of every message send and edit the bot made (any channel, any token)."""
    return [c.json for c in fake.calls if (c.method, c.route) in MESSAGE_WRITES]


def every_write_limits_mentions(fake: FakeDiscord) -> bool:
    """Discord re-parses mentions on every edit: each write must say who may be pinged."""
    writes = message_writes(fake)
    return bool(writes) and all(
        isinstance(body, dict) and isinstance(body.get("allowed_mentions"), dict) for body in writes
    )
