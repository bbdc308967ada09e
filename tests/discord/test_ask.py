"""``/ask``: deferred at once, streamed into the original response, continued in
followups, and moved to a channel message when the interaction token dies."""

from __future__ import annotations

import gc

import discord

from tests.discord.conftest import (
    StartBot,
    answer,
    bot_messages,
    eventually,
    every_write_limits_mentions,
    finished,
    pings_nobody,
    stream,
)
from tests.fakes.discord_server import (
    CALLBACK_DEFERRED_CHANNEL_MESSAGE,
    CHANNEL_ID,
    FLAG_LOADING,
    FLAG_SUPPRESS_NOTIFICATIONS,
    GUILD_ID,
    FakeDiscord,
    MessageRecord,
)
from tests.fakes.llm_server import FakeLLMServer

PIECES = ["Hello", " there", ", this", " is", " the", " answer", "."]
ANSWER = "".join(PIECES)


async def test_ask_defers_then_grows_the_original_response_to_exactly_the_answer(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES, delay=0.15))
    async with start_bot():
        assert {c["name"] for c in fake.commands} == {"ask", "reset"}
        interaction = await fake.inject_slash_command("ask", {"prompt": "say hello"})
        await eventually(
            lambda: interaction.original is not None and finished(interaction.original)
        )
    assert interaction.callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE
    assert interaction.responded_at is not None
    assert interaction.responded_at - interaction.created_at < 1.0
    original = interaction.original
    assert original is not None
    assert original.history[0].flags & FLAG_LOADING  # "thinking…" first
    shown = [answer_text for answer_text in (r.content for r in original.edits)]
    assert len(shown) >= 3, shown  # it grew: several edits before the last
    assert all("writing…" in s for s in shown[:-1])
    assert original.content == ANSWER  # exactly the model's text, no state line left
    assert original.components == []
    assert interaction.followups == []
    assert llm_server.requests[0].json["messages"][-1]["content"] == "say hello"
    assert all(pings_nobody(r.allowed_mentions) for r in original.edits)
    assert sum(fake.rate_limited.values()) == 0


async def test_a_streaming_ask_holds_neither_its_deferral_nor_cached_messages(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    """Memory per active reply: once the deferral's id is taken, discord.py's answer
    (the whole response message) is let go, and no message cache keeps the
    reply's messages (chatrelay reads neither)."""
    llm_server.enqueue(stream(PIECES, delay=0.3))
    async with start_bot() as app:
        interaction = await fake.inject_slash_command("ask", {"prompt": "say hello"})
        await eventually(lambda: interaction.original is not None and interaction.original.edits)
        assert not finished(interaction.original)  # still streaming
        gc.collect()
        held = [o for o in gc.get_objects() if isinstance(o, discord.InteractionCallbackResponse)]
        assert held == []
        assert list(app.client.cached_messages) == []
        await eventually(lambda: finished(interaction.original))


def long_answer(paragraphs: int = 32) -> list[str]:
    """About 6,000 characters of prose in 10-word pieces, paragraphs between."""
    pieces = []
    for n in range(paragraphs):
        words = [f"word{n}-{i}" for i in range(20)]
        pieces += [" ".join(words[:10]) + " ", " ".join(words[10:]) + ".\n\n"]
    return pieces


async def test_a_6000_character_answer_continues_in_silent_followups(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    pieces = long_answer()
    text = "".join(pieces)
    assert 5800 < len(text) < 6500
    llm_server.enqueue(stream(pieces, delay=0.01))
    async with start_bot():
        interaction = await fake.inject_slash_command("ask", {"prompt": "write a lot"})
        await eventually(
            lambda: len(interaction.followups) >= 3 and finished(interaction.followups[-1])
        )
    original = interaction.original
    assert original is not None
    messages = [original, *interaction.followups]
    assert 4 <= len(messages) <= 5
    assert "".join(answer(m) for m in messages) == text  # nothing lost, nothing twice
    assert all(len(m.content) <= 2000 for m in messages)
    assert all(finished(m) for m in messages)
    assert all(m.flags & FLAG_SUPPRESS_NOTIFICATIONS for m in interaction.followups)
    for message in messages:
        assert all(pings_nobody(r.allowed_mentions) for r in message.history[1:])
    assert sum(fake.rate_limited.values()) == 0
    assert every_write_limits_mentions(fake)


async def test_an_expired_interaction_finishes_in_a_channel_message(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    pieces = [f"part {i}. " for i in range(20)]
    llm_server.enqueue(stream(pieces, delay=0.1))
    async with start_bot():
        interaction = await fake.inject_slash_command("ask", {"prompt": "take your time"})
        await eventually(lambda: interaction.original is not None and interaction.original.edits)
        fake.expire_interaction(interaction.token)
        await eventually(lambda: any(finished(m) for m in channel_replies(fake)))
    [moved] = channel_replies(fake)
    assert answer(moved) == "".join(pieces)  # the whole answer, in one channel message
    original = interaction.original
    assert original is not None
    assert moved.message_reference is not None
    assert moved.message_reference["message_id"] == str(original.id)
    assert moved.flags & FLAG_SUPPRESS_NOTIFICATIONS
    assert all(pings_nobody(r.allowed_mentions) for r in moved.history)
    expired = [c for c in fake.calls if c.status == 404]
    assert len(expired) == 1  # one 10015, then the sink never used the dead token again
    assert expired[0].response["code"] == 10015
    assert every_write_limits_mentions(fake)


async def test_before_the_token_dies_the_reply_moves_to_the_channel_and_points_there(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    pieces = [f"step {i}. " for i in range(16)]
    llm_server.enqueue(stream(pieces, delay=0.1))
    async with start_bot(discord_interaction_window=0.5):
        interaction = await fake.inject_slash_command("ask", {"prompt": "a slow one"})
        await eventually(lambda: any(finished(m) for m in channel_replies(fake)))
    [moved] = channel_replies(fake)
    assert answer(moved) == "".join(pieces)
    original = interaction.original
    assert original is not None
    assert f"/{CHANNEL_ID}/{moved.id}" in original.content  # a jump link to where it went
    assert original.components == []  # no Stop button left behind
    assert not [c for c in fake.calls if c.status >= 400]
    assert every_write_limits_mentions(fake)


def channel_replies(fake: FakeDiscord) -> list[MessageRecord]:
    """The bot's own channel messages (not interaction responses or followups)."""
    return [m for m in bot_messages(fake, CHANNEL_ID) if m.webhook_id is None]


async def test_commands_sync_to_development_guilds_and_only_from_shard_zero(
    fake: FakeDiscord, start_bot: StartBot
) -> None:
    async with start_bot(discord_guild_ids=str(GUILD_ID), discord_shard_count=2):
        assert {c["name"] for c in fake.guild_commands[GUILD_ID]} == {"ask", "reset"}
        assert fake.commands == []  # not globally
        assert [i["shard"] for i in fake.identifies] == [[0, 2], [1, 2]]
    fake.guild_commands.clear()
    async with start_bot(discord_shard_ids="1", discord_shard_count=2):
        assert fake.identifies[-1]["shard"] == [1, 2]
    assert fake.guild_commands == {} and fake.commands == []  # shard 0's process syncs
