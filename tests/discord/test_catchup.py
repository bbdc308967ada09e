"""A message sent while no process was connected is answered by the next one, once
(``bots.discord.service.CatchUp``): the real discord.py, the fake Discord, one Redis
shared by the processes, as in a deploy."""

from __future__ import annotations

import pytest

from bots.discord.service import DiscordService
from core.state.lastseen import LastSeen
from core.state.store import State
from tests.discord.conftest import (
    StartBot,
    answer,
    bot_messages,
    eventually,
    finished,
    outcome_of,
    stream,
)
from tests.fakes.discord_server import ALICE, CHANNEL_ID, FakeDiscord, FakeUser, MessageRecord
from tests.fakes.llm_server import FakeLLMServer

HISTORY = ("GET", "channels/{channel_id}/messages")

AUTO_RULES = f"""
[[channels]]
platform = "discord"
id = "{CHANNEL_ID}"
mode = "auto"
"""


def replies_to(fake: FakeDiscord, channel_id: int, message: MessageRecord) -> list[MessageRecord]:
    """The bot's finished messages replying to ``message``."""
    return [
        m
        for m in bot_messages(fake, channel_id)
        if (m.message_reference or {}).get("message_id") == str(message.id) and finished(m)
    ]


async def cursor(state: State, channel_id: int) -> int:
    """The newest message id noted for the channel (0: none yet)."""
    seen = await LastSeen(state.redis, state.keys).recent("discord", "0", 100)
    return max((int(s.message) for s in seen if s.channel == str(channel_id)), default=0)


def while_nobody_is_connected(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake refuses to inject a message with no client connected (a guard
    against tests that forgot to wait for one); here that is the point."""
    assert fake.connections == [] and fake.live_sessions == []
    monkeypatch.setattr(fake, "_require_client", lambda: None)


@pytest.mark.parametrize("where", ["mention", "auto-reply channel", "dm"])
async def test_a_message_sent_between_two_processes_is_answered_once_by_the_next(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    channel_id = fake.add_dm_channel(ALICE).id if where == "dm" else CHANNEL_ID
    rules = AUTO_RULES if where == "auto-reply channel" else ""
    mention = where == "mention"
    llm_server.enqueue(stream(["Before."]), stream(["Caught", " up."]))
    async with start_bot(rules) as first:
        asked = await fake.inject_message(channel_id, "hello", ALICE, mentions_bot=mention)
        await eventually(lambda: [m for m in bot_messages(fake, channel_id) if finished(m)])
        assert await outcome_of(first, asked) == "answered"
    # The first process closed its gateway (a deploy): nobody receives what comes now.
    noted = await cursor(state, channel_id)
    assert noted >= asked.id  # written when the process closed, at the latest
    while_nobody_is_connected(fake, monkeypatch)
    missed = await fake.inject_message(channel_id, "anyone there?", ALICE, mentions_bot=mention)
    history_calls = len(fake.calls_to(*HISTORY))
    async with start_bot(rules) as second:
        assert await outcome_of(second, missed) == "answered"
        await eventually(lambda: len(answered(fake, channel_id, missed, where)) == 1)
    assert [answer(m) for m in answered(fake, channel_id, missed, where)] == ["Caught up."]
    assert len(llm_server.requests) == 2  # answered once, and the old message not again
    [fetched] = fake.calls_to(*HISTORY)[history_calls:]  # one page, after the cursor
    assert fetched.path == f"channels/{channel_id}/messages"
    assert fetched.query == {"limit": "100", "after": str(noted)}
    assert await cursor(state, channel_id) >= missed.id


def answered(
    fake: FakeDiscord, channel_id: int, missed: MessageRecord, where: str
) -> list[MessageRecord]:
    if where == "dm":  # DM answers are plain messages: the second one
        return [m for m in bot_messages(fake, channel_id) if finished(m)][1:]
    return replies_to(fake, channel_id, missed)


async def test_a_message_both_processes_saw_is_answered_once(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rolling deploy: the live process answers a message its cursor has not
    caught up with yet; the new process's catch-up finds it too and leaves it."""
    llm_server.enqueue(stream(["One."]), stream(["Two."]), stream(["duplicate!"]))
    async with start_bot() as first:
        one = await fake.inject_message(CHANNEL_ID, "one", ALICE, mentions_bot=True)
        assert await outcome_of(first, one) == "answered"

        async def noted() -> bool:
            return await cursor(state, CHANNEL_ID) >= one.id

        await eventually(noted)
        monkeypatch.setattr(first.events.cursors, "seen", lambda *_, **__: None)  # lags behind
        two = await fake.inject_message(CHANNEL_ID, "two", ALICE, mentions_bot=True)
        assert await outcome_of(first, two) == "answered"
        assert await cursor(state, CHANNEL_ID) < two.id
        async with start_bot() as second:
            assert await outcome_of(second, two) == "deduplicated"
            assert second.events.intake.outcome(one.id) is None  # behind the cursor: not looked at
    assert [answer(m) for m in replies_to(fake, CHANNEL_ID, two)] == ["Two."]
    assert len(llm_server.requests) == 2


async def test_channels_nobody_addressed_the_bot_in_are_not_followed(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bob = FakeUser(1_200_000_000_000_000_777, "carol")
    async with start_bot(discord_message_content="on") as service:
        chatter = await fake.inject_message(CHANNEL_ID, "just chatting", bob)
        assert await outcome_of(service, chatter) == "ignored"
    assert await cursor(state, CHANNEL_ID) == 0
    calls = len(fake.calls_to(*HISTORY))
    async with start_bot() as service:
        await service_ready(service)
    assert fake.calls_to(*HISTORY)[calls:] == []
    assert llm_server.requests == []


async def service_ready(service: DiscordService) -> None:
    """Until the catch-up started at the shard's READY has run."""
    await eventually(lambda: service.catchup.runs >= 1)


async def test_a_gap_longer_than_a_page_is_read_page_by_page(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    llm_server.enqueue(stream(["Before."]), stream(["At the end."]))
    carol = FakeUser(1_200_000_000_000_000_777, "carol")
    async with start_bot() as first:
        asked = await fake.inject_message(CHANNEL_ID, "hello", ALICE, mentions_bot=True)
        assert await outcome_of(first, asked) == "answered"
    while_nobody_is_connected(fake, monkeypatch)
    for i in range(120):
        await fake.inject_message(CHANNEL_ID, f"chatter {i}", carol)
    last = await fake.inject_message(CHANNEL_ID, "and me?", ALICE, mentions_bot=True)
    calls = len(fake.calls_to(*HISTORY))
    async with start_bot() as second:
        assert await outcome_of(second, last) == "answered"
        await eventually(lambda: replies_to(fake, CHANNEL_ID, last))
    pages = fake.calls_to(*HISTORY)[calls:]
    assert len(pages) == 2
    [ninety_ninth] = [m for m in fake.channel_messages(CHANNEL_ID) if m.content == "chatter 99"]
    assert [p.query["after"] for p in pages] == [pages[0].query["after"], str(ninety_ninth.id)]
    assert second.catchup.caught_up == 121  # the chatter and the mention
    assert len(llm_server.requests) == 2
