"""Which project files a token crosses from SSE bytes to a platform call.

A reply streams from the fake LLM server (over HTTP, the real ``LLMClient``)
through the real engine into each platform's real sink and client, against
that platform's fake server, all on 127.0.0.1. A profiler hook records every
Python function that runs while the reply streams (setup excluded: clients,
sinks and servers are built before it starts) and the calls between project
files. Printed per platform: the distinct project files on the path
(``core/``, ``bots/``; tests and libraries not counted), and every call from
an adapter's sink back into ``core/reply/engine.py`` (there must be none).

Slack (post and edit) and Discord (a channel message). Two budgets:
``LocalBudget`` (the engine's seam alone) and the shared ``RedisBudget``
through ``FairBudget`` (production: the budget is a room of ``core/state``).

    python -m bench.walk            # needs REDIS_URL for the Redis variant
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ROOMS = ("core", "bots")


MARKER = "zebrafinch"
"""One word of the model's answer, followed from bytes to the platform call."""


@dataclass
class Walk:
    files: set[str] = field(default_factory=set)
    """Every project file a function of which ran while the reply streamed."""
    token_path: set[str] = field(default_factory=set)
    """The project files whose functions were handed the marker word: in bytes,
    an SSE event, a model event, the reply's text, a frame, a payload."""
    edges: set[tuple[str, str]] = field(default_factory=set)

    def back_into_engine(self) -> list[tuple[str, str]]:
        return sorted(
            (a, b)
            for a, b in self.edges
            if a.startswith("bots/") and a.endswith("/sink.py") and b == "core/reply/engine.py"
        )


def _project(code: types.CodeType) -> str | None:
    try:
        path = Path(code.co_filename).resolve().relative_to(REPO)
    except ValueError:
        return None
    return str(path) if path.parts and path.parts[0] in ROOMS else None


def _carries(value: object, depth: int = 0) -> bool:
    """Whether ``value`` holds the marker: text or bytes, or an object, mapping or
    sequence holding it (two levels deep: a frame's text, a payload's blocks)."""
    if isinstance(value, str):
        return MARKER in value
    if isinstance(value, bytes | bytearray):
        return MARKER.encode() in value
    if isinstance(value, memoryview):
        return MARKER.encode() in value.tobytes()
    if depth >= 2:
        return False
    if isinstance(value, dict):
        return any(_carries(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_carries(v, depth + 1) for v in value[:64])
    return any(_carries(v, depth + 1) for v in _fields(value))


def _fields(value: object) -> list[object]:
    """An object's stored attributes, never a property (reading one may do I/O:
    an HTTP response's ``text``)."""
    stored = getattr(value, "__dict__", None)
    if isinstance(stored, dict):
        return list(stored.values())
    names = getattr(type(value), "__struct_fields__", None) or [
        name
        for klass in type(value).__mro__
        for name in getattr(klass, "__slots__", ())
        if isinstance(getattr(klass, name, None), types.MemberDescriptorType)
    ]
    return [getattr(value, name, None) for name in names]


@asynccontextmanager
async def tracing() -> AsyncIterator[Walk]:
    walk = Walk()

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = _project(frame.f_code)
        if callee is None:
            return
        walk.files.add(callee)
        if callee not in walk.token_path and any(map(_carries, frame.f_locals.values())):
            walk.token_path.add(callee)
        caller = frame.f_back
        while caller is not None and _project(caller.f_code) is None:
            caller = caller.f_back  # through library frames (asyncio, httpx) to ours
        if caller is not None:
            source = _project(caller.f_code)
            if source is not None and source != callee:
                walk.edges.add((source, callee))

    # As in production (LOG_LEVEL=INFO): a library's debug lines, which a test's
    # log capture would otherwise turn on, carry payloads through the log filters.
    logging.disable(logging.DEBUG)
    sys.setprofile(profile)
    try:
        yield walk
    finally:
        sys.setprofile(None)
        logging.disable(logging.NOTSET)


TEXT = "A token walks. " * 20 + MARKER + " walks on. " + "And on. " * 20


async def _reply(make_sink: Callable[[], Any], budget: Any) -> Walk:
    """Stream ``TEXT`` from the fake LLM server into the sink ``make_sink`` builds."""
    from core.llm.client import LLMClient, RetryPolicy, Timeouts
    from core.llm.messages import ChatMessage
    from core.llm.provider import Provider
    from core.reply import Pacing, Reply
    from tests.fakes.llm_server import FakeLLMServer, FakeResponse
    from tests.fakes.streams import chat_stream, split_events

    async with FakeLLMServer() as server:
        server.enqueue(
            FakeResponse(
                chunks=split_events(chat_stream([w + " " for w in TEXT.split(" ") if w])),
                chunk_delay=0.001,
            )
        )
        client = LLMClient(
            [Provider(base_url=server.base_url, model="m", api_key="k")],
            retry=RetryPolicy(max_retries=0),
            timeouts=Timeouts(),
        )
        sink = make_sink()
        reply = Reply(sink, budget=budget, pacing=Pacing(min_interval=0.05))
        events = client.stream([ChatMessage("user", "walk")])
        async with tracing() as walk:
            result = await reply.run(events)
        await client.aclose()
    assert result.text == TEXT, f"the reply did not arrive whole: {result.outcome}"
    return walk


async def slack_walk(budget: Any) -> Walk:
    from bots.slack.api import SafeWebClient
    from bots.slack.sink import SlackReplySink, SlackTarget
    from tests.fakes.slack_server import FakeSlack

    async with FakeSlack(team_id="T1", bot_user_id="UBOT") as slack:
        client = SafeWebClient(token="xoxb-test", base_url=slack.api_url)
        target = SlackTarget(team="T1", channel="C1", thread_ts="1.1", recipient_user="U1")
        return await _reply(
            lambda: SlackReplySink(client=client, target=target, reply_id="r1", native=False),
            budget,
        )


async def discord_walk(budget: Any) -> Walk:
    import discord

    from bots.discord.api import ChannelOutlet
    from bots.discord.sink import DiscordReplySink
    from tests.fakes.discord_server import CHANNEL_ID, FakeDiscord, point_discord_py_at

    async with FakeDiscord() as fake:
        with point_discord_py_at(fake):
            client = discord.Client(intents=discord.Intents.none())
            await client.login(fake.bot_token)
            try:
                channel = client.get_partial_messageable(CHANNEL_ID)
                return await _reply(
                    lambda: DiscordReplySink(ChannelOutlet(channel), reply_id="r1", asker=1),
                    budget,
                )
            finally:
                await client.close()


@asynccontextmanager
async def budgets() -> AsyncIterator[list[tuple[str, Any]]]:
    from core.reply import LocalBudget

    found: list[tuple[str, Any]] = [("LocalBudget", LocalBudget())]
    url = os.environ.get("REDIS_URL")
    if not url:
        yield found
        return
    from core.state import open_state
    from core.state.settings import load_state_settings

    async with open_state(load_state_settings(redis_url=url, redis_prefix="walk:")) as state:
        yield [*found, ("RedisBudget (FairBudget over Redis)", state.budget)]


WALKS = (("Slack, post+edit", slack_walk), ("Discord, channel message", discord_walk))


async def main() -> None:
    async with budgets() as found:
        for (platform, walker), (label, budget) in itertools.product(WALKS, found):
            walk = await walker(budget)
            print(f"{platform}, {label}: {len(walk.files)} project files ran")
            for name in sorted(walk.files):
                print(f"  {'*' if name in walk.token_path else ' '} {name}")
            print(f"  * the token's path: {len(walk.token_path)} files")
            print(f"  calls from a sink back into the engine: {walk.back_into_engine() or 'none'}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    asyncio.run(main())
