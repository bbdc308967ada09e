"""A reply whose process is gone before it showed any text is answered anew, once,
by the next process of its shard: the in-flight record carries the hand-over
payload (``bots.discord.handover``), and the sweeper of whichever process finds
the orphan hands the message over (``core.state.inflight``).

A killed process is played as the chaos suite plays one: everything it says to
Redis goes through a proxy the test cuts (no record written, no heartbeat
after), and its tasks are cancelled, as a process's are when it dies, so it
writes nothing more to Discord either. Both processes share a private
redis-server, the next one talking to it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import discord
import pytest

from bots.discord.format import ANSWERING_AGAIN
from bots.discord.handover import shard_of
from bots.discord.limits import DEFAULT_LIMITS as DISCORD_LIMITS
from bots.discord.service import DiscordService
from core.config import DEFAULT_SYSTEM_PROMPT
from core.state.inflight import InflightRecord, MessageRecord
from core.state.settings import load_state_settings
from core.state.store import State, open_state
from tests.chaos.proxy import CuttableProxy
from tests.discord.conftest import (
    BUDGET_LIMITS,
    StartBot,
    answer,
    bot_messages,
    eventually,
    finished,
    stream,
)
from tests.fakes.discord_server import (
    ALICE,
    CHANNEL_ID,
    FLAG_LOADING,
    GUILD_ID,
    FakeDiscord,
    InteractionRecord,
)
from tests.fakes.llm_server import FakeLLMServer, FakeResponse
from tests.invariants import Expected, ReplyKey, check_discord
from tests.state.pausable import PausableRedis

SHARDS = {"discord_shard_count": 2}
"""The guild is on shard 1 of 2: a hand-over must go to that shard, not to 0."""
NEXT_PROCESS = {"discord_shard_ids": "1", **SHARDS}
"""The next process runs only the guild's shard."""
STALL = FakeResponse(chunks=[], stall_after=0)
"""The model answers the request and then says nothing (until the client goes)."""


@dataclass
class Process:
    service: DiscordService
    state: State
    proxy: CuttableProxy
    stack: contextlib.AsyncExitStack


@contextlib.asynccontextmanager
async def shared_state(url: str) -> AsyncIterator[State]:
    settings = load_state_settings(
        redis_url=url,
        redis_prefix="chatrelay-anew:",
        inflight_heartbeat=0.2,
        inflight_timeout=1.0,
        lock_ttl=1.0,  # the dead process's conversation lock frees soon
        rate_limits=BUDGET_LIMITS,
    )
    async with open_state(settings, defaults=DISCORD_LIMITS) as state:
        yield state


@contextlib.asynccontextmanager
async def doomed(start_bot: StartBot, pausable: PausableRedis) -> AsyncIterator[Process]:
    """A process whose Redis the test can cut (see ``kill``); closed on exit if the
    test did not kill it (a failed assertion)."""
    async with contextlib.AsyncExitStack() as stack:
        proxy = await stack.enter_async_context(CuttableProxy("127.0.0.1", pausable.port))
        state = await stack.enter_async_context(shared_state(proxy.url))
        service = await stack.enter_async_context(start_bot(on=state, **SHARDS))
        yield Process(service, state, proxy, stack)


async def kill(process: Process) -> None:
    """The process dies: Redis hears nothing more from it, its tasks end where they
    are, its gateway connection closes."""
    process.proxy.cut()
    handlers = list(process.service.replies._busy)
    assert handlers  # the reply being written
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    with contextlib.suppress(Exception):  # its Redis is gone: closing may complain
        await process.stack.aclose()


async def streaming_record(state: State, naming: int = 0) -> InflightRecord:
    """The one in-flight record, once the reply is recorded as streaming and the
    record names ``naming`` messages (written in the background, a beat later)."""
    records = state.keys.inflight_records("discord")

    async def recorded() -> list[InflightRecord]:
        found = [InflightRecord.from_json(raw) for raw in await state.redis.hvals(records)]
        return found if any(len(r.messages) >= naming for r in found) else []

    await eventually(recorded)
    [record] = await recorded()
    return record


async def settled(state: State) -> bool:
    """Nothing left in flight nor handed over: nothing more can answer anything."""
    keys = state.keys
    beats = await state.redis.zcard(keys.inflight_beats("discord"))
    waiting = [await state.redis.llen(keys.deferred("discord", str(s))) for s in (0, 1)]
    return beats == 0 and waiting == [0, 0]


async def delivered(fake: FakeDiscord, expected: dict[ReplyKey, Expected]) -> None:
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: not check_discord(fake, expected), within=15)
    assert check_discord(fake, expected) == []


async def test_a_mention_whose_process_died_before_any_text_is_answered_once_by_the_next(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    pausable: PausableRedis,
) -> None:
    assert shard_of(GUILD_ID, 2) == 1
    llm_server.enqueue(STALL, stream(["Answered", " anew."]))
    async with doomed(start_bot, pausable) as first:
        question = await fake.inject_message(CHANNEL_ID, "are you there?", ALICE, mentions_bot=True)
        await llm_server.wait_requests(1)  # the model is asked, and stalls
        record = await streaming_record(first.state)
        assert (record.handover["kind"], record.partition) == ("message", "1")
        assert record.messages == ()  # nothing shown yet: only typing
        await kill(first)
    assert bot_messages(fake, CHANNEL_ID) == []

    async with shared_state(pausable.url) as state, start_bot(on=state, **NEXT_PROCESS):
        await delivered(fake, {question.id: Expected("Answered anew.")})
        await eventually(lambda: settled(state))
    [reply] = bot_messages(fake, CHANNEL_ID)
    assert (reply.message_reference or {}).get("message_id") == str(question.id)
    assert reply.mentions == [ALICE.id]  # the asker is notified, as for any mention
    assert len(llm_server.requests) == 2  # the stalled one, and the answer
    [request] = llm_server.requests[1:]
    last = request.json["messages"][-1]
    assert (last["role"], last["content"]) == ("user", "are you there?")


def message_payload(
    conversation: tuple[int, int, int | None],
    text: str,
    *,
    to: tuple[int, int | None, bool],
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> dict[str, Any]:
    """The hand-over payload of a message (``bots.discord.handover``), spelled out:
    ``conversation`` is (guild, channel, chain root or None), ``to`` is (channel,
    message replied to, notify)."""
    guild, channel, root = conversation
    to_channel, reference, notify = to
    return {
        "v": 1,
        "kind": "message",
        "conversation": {
            "workspace": str(guild),
            "channel": str(channel),
            "thread": "" if root is None else str(root),
        },
        "author": str(ALICE.id),
        "text": text,
        "channel": str(to_channel),
        "system_prompt": system_prompt,
        "model": None,
        "record": {"channel": str(to_channel)},
        "to": {
            "channel": str(to_channel),
            "guild": str(GUILD_ID),
            "reference": None if reference is None else str(reference),
            "notify": notify,
        },
    }


SUPPORT = (
    "[[channels]]\n"
    'platform = "discord"\n'
    f'id = "{CHANNEL_ID}"\n'
    'mode = "auto"\n'
    'system_prompt = "You are ACME support."\n'
    "thread_per_message = true\n"
)


@pytest.mark.parametrize("kind", ["mention", "reply", "auto-reply thread"])
async def test_a_reply_to_a_message_is_recorded_with_what_answers_it_anew(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State, kind: str
) -> None:
    """While it streams, the in-flight record carries the hand-over payload of the
    message it answers and the shard of its guild."""
    late = FakeResponse(chunks=stream(["Later."]).chunks, first_byte_delay=0.5)
    async with start_bot(SUPPORT if kind == "auto-reply thread" else "", **SHARDS):
        if kind == "reply":
            llm_server.enqueue(stream(["First."]))
        llm_server.enqueue(late)
        if kind == "mention":
            asked = await fake.inject_message(CHANNEL_ID, "hi?", ALICE, mentions_bot=True)
            expected = message_payload(
                (GUILD_ID, CHANNEL_ID, asked.id), "hi?", to=(CHANNEL_ID, asked.id, True)
            )
        elif kind == "reply":
            root = await fake.inject_message(CHANNEL_ID, "hi?", ALICE, mentions_bot=True)
            await eventually(lambda: [m for m in bot_messages(fake, CHANNEL_ID) if finished(m)])
            await eventually(lambda: settled(state))  # its record is gone
            [first] = bot_messages(fake, CHANNEL_ID)
            asked = await fake.inject_message(CHANNEL_ID, "and?", ALICE, reply_to=first.id)
            expected = message_payload(
                (GUILD_ID, CHANNEL_ID, root.id), "and?", to=(CHANNEL_ID, asked.id, True)
            )
        else:
            asked = await fake.inject_message(CHANNEL_ID, "my order is late", ALICE)
            await eventually(lambda: [c for c in fake.channels.values() if c.parent_id])
            [thread] = [c for c in fake.channels.values() if c.parent_id == CHANNEL_ID]
            expected = message_payload(
                (GUILD_ID, thread.id, None),
                "my order is late",
                to=(thread.id, None, False),
                system_prompt="You are ACME support.",
            )
        record = await streaming_record(state)
        assert record.handover == expected
        assert record.partition == "1"  # the guild's shard, of 2
        await eventually(lambda: settled(state))  # answered, and forgotten
    assert answer(bot_messages(fake, int(expected["to"]["channel"]))[-1]) == "Later."


def ask_payload(fake: FakeDiscord, interaction: InteractionRecord, response: int) -> dict[str, Any]:
    """The hand-over payload of an ``/ask`` in the test channel, spelled out."""
    return {
        "v": 1,
        "kind": "ask",
        "conversation": {
            "workspace": str(GUILD_ID),
            "channel": str(CHANNEL_ID),
            "thread": f"ask:{ALICE.id}",
        },
        "author": str(ALICE.id),
        "text": "are you there?",
        "channel": str(CHANNEL_ID),
        "system_prompt": DEFAULT_SYSTEM_PROMPT,
        "model": None,
        "record": {"channel": str(CHANNEL_ID)},
        "to": {
            "app": str(fake.app_id),
            "token": interaction.token,
            "response": str(response),
            "channel": str(CHANNEL_ID),
            "guild": str(GUILD_ID),
            "asked_at": discord.utils.snowflake_time(interaction.id).timestamp(),
            "writable": True,
        },
    }


@pytest.mark.parametrize("window", [840.0, 0.5])
async def test_an_ask_whose_process_died_before_any_text_is_answered_in_its_own_response(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    pausable: PausableRedis,
    window: float,
) -> None:
    """The "thinking…" response is message 0 of the record from the start; the
    sweeper says it answers again, and the next process writes the answer into it,
    or (past ``DISCORD_INTERACTION_WINDOW`` by then) moves it to the channel and
    points there, as any ``/ask`` reply does."""
    llm_server.enqueue(STALL, stream(["Answered", " in place."]))
    async with doomed(start_bot, pausable) as first:
        interaction = await fake.inject_slash_command("ask", {"prompt": "are you there?"})
        await llm_server.wait_requests(1)  # deferred, and the model stalls
        record = await streaming_record(first.state, naming=1)
        original = interaction.original
        assert original is not None and original.flags & FLAG_LOADING  # "thinking…"
        assert record.messages == (
            MessageRecord(
                {
                    "kind": "interaction",
                    "app": str(fake.app_id),
                    "token": interaction.token,
                    "channel": str(CHANNEL_ID),
                    "message": str(original.id),
                    "render": "content",
                },
                "",
            ),
        )
        assert record.handover == ask_payload(fake, interaction, original.id)
        assert record.partition == "1"
        await kill(first)
    assert original.edits == [] and original.flags & FLAG_LOADING

    async with (
        shared_state(pausable.url) as state,
        start_bot(on=state, discord_interaction_window=window, **NEXT_PROCESS),
    ):
        await delivered(fake, {interaction.token: Expected("Answered in place.")})
        await eventually(lambda: settled(state))
    assert original.edits[0].content == f"-# {ANSWERING_AGAIN}"  # not "thinking…" meanwhile
    moved = [m for m in bot_messages(fake, CHANNEL_ID) if m.webhook_id is None]
    if window > 1:
        assert original.content == "Answered in place." and moved == []
    else:  # too late for the token's window: in the channel, the response points there
        [message] = moved
        assert answer(message) == "Answered in place."
        assert f"/{CHANNEL_ID}/{message.id}" in original.content
        assert (message.message_reference or {}).get("message_id") == str(original.id)
    assert interaction.followups == []
    assert len(llm_server.requests) == 2
