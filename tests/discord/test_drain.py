"""A deploy loses no message: while a process drains, its gateway stays open, new
messages are handed over through Redis to the next process of their shard, a new
``/ask`` is told to ask again within Discord's 3 seconds, and a deferred ``/ask``
whose reply can no longer start never stays "thinking…".

The bot is put into draining mode the way ``chatrelay run`` does on SIGTERM:
``service.stop_intake()``, then the replies drain, then ``service.close()``.
"""

from __future__ import annotations

import asyncio

import pytest

from bots.discord.conversations import ask_conversation, chain_conversation, channel_conversation
from bots.discord.format import RESTARTING_TEXT
from bots.discord.service import DiscordService
from core.config import DEFAULT_SYSTEM_PROMPT
from core.state.deferred import DeferredRequest
from core.state.store import State
from tests.discord.conftest import (
    StartBot,
    answer,
    bot_messages,
    eventually,
    finished,
    pings_nobody,
    state_line,
    stream,
)
from tests.fakes.discord_server import (
    ALICE,
    CALLBACK_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_CHANNEL_MESSAGE,
    CHANNEL_ID,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    GUILD_ID,
    FakeDiscord,
    InteractionRecord,
    MessageRecord,
)
from tests.fakes.llm_server import FakeLLMServer


async def handed_over(state: State, shard: str = "0") -> list[DeferredRequest]:
    """The hand-overs waiting for a process of ``shard``, left in place."""
    raw = await state.redis.lrange(state.keys.deferred("discord", shard), 0, -1)
    return [DeferredRequest.from_json(entry) for entry in raw]


def reply_to(fake: FakeDiscord, message_id: int) -> MessageRecord | None:
    """The bot's finished message replying to ``message_id``."""
    for message in bot_messages(fake, CHANNEL_ID):
        reference = message.message_reference or {}
        if reference.get("message_id") == str(message_id) and finished(message):
            return message
    return None


def streaming(interaction: InteractionRecord) -> bool:
    original = interaction.original
    return original is not None and bool(original.edits)


def restarting(interaction: InteractionRecord) -> bool:
    """The deferred response was edited to say the bot restarts, and nothing else."""
    original = interaction.original
    return (
        original is not None
        and original.content == RESTARTING_TEXT
        and original.flags & FLAG_LOADING == 0
        and original.embeds == []
        and original.components == []
        and pings_nobody(original.history[-1].allowed_mentions)
    )


async def drain(service: DiscordService, grace: float) -> None:
    """What ``chatrelay run`` does between ``stop_intake`` and ``close``."""
    await service.replies.responder.active.drain(grace)


async def test_the_gateway_stays_open_while_the_reply_in_flight_finishes_then_closes(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    pieces = [f"part {i}. " for i in range(10)]
    llm_server.enqueue(stream(pieces, delay=0.1))
    async with start_bot() as service:
        await fake.inject_message(CHANNEL_ID, "a long one", ALICE, mentions_bot=True)
        await eventually(lambda: bot_messages(fake, CHANNEL_ID))
        await service.stop_intake()  # SIGTERM: a deploy
        assert await service.connected()  # events still reach this process
        await drain(service, grace=10)
        [reply] = bot_messages(fake, CHANNEL_ID)
        assert finished(reply)  # the drain waited for it
        assert len(fake.connections) == 1
        await service.close()
        assert not await service.connected()
        assert fake.connections == []
    assert answer(reply) == "".join(pieces)  # finished whole, not interrupted
    assert len(fake.identifies) == 1  # and the gateway stayed closed


async def test_while_draining_a_new_ask_is_told_to_ask_again_within_3_seconds(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    async with start_bot() as service:
        await service.stop_intake()
        interaction = await fake.inject_slash_command("ask", {"prompt": "hello?"})
        await eventually(lambda: interaction.acknowledged, within=3)
        assert await service.connected()  # the gateway stays open while draining
        assert len(fake.connections) == 1
        await service.close()
        assert fake.connections == []  # closed only now
    assert interaction.callback_type == CALLBACK_CHANNEL_MESSAGE
    assert interaction.callback_data == {
        "content": RESTARTING_TEXT,
        "flags": FLAG_EPHEMERAL,
        "allowed_mentions": {"parse": []},
        "tts": False,
    }
    assert interaction.responded_at is not None
    assert interaction.responded_at - interaction.created_at < 3.0
    assert llm_server.requests == []
    assert len(fake.identifies) == 1


async def test_a_message_arriving_as_the_process_closes_is_still_handed_over(
    fake: FakeDiscord, start_bot: StartBot, state: State
) -> None:
    async with start_bot() as service:
        await service.stop_intake()
        await drain(service, grace=1.0)
        received = asyncio.ensure_future(service.client.wait_for("message", timeout=5))
        question = await fake.inject_message(CHANNEL_ID, "last one", ALICE, mentions_bot=True)
        await received  # dispatched to the bot, which now waits for a live process
        await service.close()
        [entry] = await handed_over(state)  # before the gateway closed
        assert entry.payload["to"]["reference"] == str(question.id)
    assert bot_messages(fake, CHANNEL_ID) == []


async def test_a_mention_during_the_drain_is_answered_once_by_the_next_process(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    llm_server.enqueue(stream(["Answered", " by the", " next process."]))
    async with start_bot() as draining:
        await draining.stop_intake()
        question = await fake.inject_message(CHANNEL_ID, "are you there?", ALICE, mentions_bot=True)

        async def one_handed_over() -> bool:
            return len(await handed_over(state)) == 1

        await eventually(one_handed_over)
        [entry] = await handed_over(state)
        assert await draining.connected()
        assert bot_messages(fake, CHANNEL_ID) == []  # not answered here
        conversation = chain_conversation(GUILD_ID, CHANNEL_ID, question.id)
        assert (entry.platform, entry.partition) == ("discord", "0")
        assert entry.payload == {
            "v": 1,
            "kind": "message",
            "conversation": {
                "workspace": str(GUILD_ID),
                "channel": str(CHANNEL_ID),
                "thread": str(question.id),
            },
            "author": str(ALICE.id),
            "text": "are you there?",
            "channel": str(CHANNEL_ID),
            "system_prompt": DEFAULT_SYSTEM_PROMPT,
            "model": None,
            "record": {"channel": str(CHANNEL_ID)},
            "to": {
                "channel": str(CHANNEL_ID),
                "guild": str(GUILD_ID),
                "reference": str(question.id),
                "notify": True,
            },
        }
        async with start_bot() as successor:  # the next process of shard 0
            await eventually(lambda: reply_to(fake, question.id))
            assert len(fake.connections) == 2
            await draining.close()
            assert len(fake.connections) == 1
            assert await successor.connected()
    [reply] = bot_messages(fake, CHANNEL_ID)
    assert reply is reply_to(fake, question.id)
    assert answer(reply) == "Answered by the next process."
    assert all(pings_nobody(r.allowed_mentions, replied_user=True) for r in reply.history)
    assert reply.mentions == [ALICE.id]  # the asker is notified, as for any mention
    assert len(llm_server.requests) == 1  # answered exactly once
    assert await handed_over(state) == []
    history = await state.conversations.history(conversation)
    assert [(t.role, t.text) for t in history] == [
        ("user", "are you there?"),
        ("assistant", "Answered by the next process."),
    ]


async def test_in_a_rolling_deploy_the_live_process_answers_what_reaches_both(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    llm_server.enqueue(stream(["Live."]), stream(["Live."]))
    async with start_bot() as draining, start_bot():
        await draining.stop_intake()
        question = await fake.inject_message(CHANNEL_ID, "who answers?", ALICE, mentions_bot=True)
        interaction = await fake.inject_slash_command("ask", {"prompt": "and this?"})
        await eventually(lambda: reply_to(fake, question.id))
        await eventually(
            lambda: interaction.original is not None and finished(interaction.original)
        )
        await draining.close()  # its handlers have given up on both events by now
    assert answer(reply_to(fake, question.id)) == "Live."  # type: ignore[arg-type]
    assert interaction.callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE
    assert interaction.original is not None and answer(interaction.original) == "Live."
    assert await handed_over(state) == []
    assert len(llm_server.requests) == 2


async def test_a_deferred_ask_waiting_when_the_drain_begins_says_so_at_once(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream([f"part {i}. " for i in range(40)], delay=0.1))
    async with start_bot() as service:
        first = await fake.inject_slash_command("ask", {"prompt": "a long one"})
        await eventually(lambda: streaming(first))
        # Same asker, same channel: the same conversation, so it waits for the first.
        second = await fake.inject_slash_command("ask", {"prompt": "and then?"})
        await eventually(lambda: second.original is not None)
        assert second.callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE  # "thinking…"
        await service.stop_intake()
        await eventually(lambda: restarting(second))  # no reply can start here any more
        assert not finished(first.original)  # type: ignore[arg-type]  # still streaming
        await drain(service, grace=0.2)
        await service.close()
    assert first.original is not None and finished(first.original)
    assert "interrupted" in state_line(first.original)
    assert len(llm_server.requests) == 1


async def test_a_deferred_ask_refused_after_its_lock_wait_says_so(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    """``ShuttingDown`` from the responder after the wait (replies drain before the bot
    was told, e.g. by another adapter sharing them) ends the same way."""
    llm_server.enqueue(stream([f"part {i}. " for i in range(40)], delay=0.1))
    async with start_bot() as service:
        first = await fake.inject_slash_command("ask", {"prompt": "a long one"})
        await eventually(lambda: streaming(first))
        second = await fake.inject_slash_command("ask", {"prompt": "and then?"})
        await eventually(lambda: second.original is not None)
        await drain(service, grace=0.2)  # the first is interrupted, the second gets the lock
        await eventually(lambda: restarting(second))
        await service.close()
    assert first.original is not None and "interrupted" in state_line(first.original)
    assert len(llm_server.requests) == 1


async def test_waits_for_a_lock_held_elsewhere_end_when_the_drain_begins(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    """Conversations whose lock another process holds: the deferred ``/ask`` waiting
    there says so, the DM waiting there is handed over, as soon as the drain begins."""
    llm_server.enqueue(stream(["Answered after the wait."]))
    dm = fake.add_dm_channel(ALICE)
    dm_conversation = channel_conversation(None, dm.id)
    ask = ask_conversation(GUILD_ID, CHANNEL_ID, ALICE.id)
    [ask_lock, dm_lock] = [await state.locks.acquire(c, wait=0) for c in (ask, dm_conversation)]
    assert ask_lock is not None and dm_lock is not None  # another process answers there
    async with start_bot() as service:
        interaction = await fake.inject_slash_command("ask", {"prompt": "my turn?"})
        message = await fake.inject_message(dm.id, "hello?", ALICE)

        async def both_wait_in_line() -> bool:
            ask_line = await state.redis.llen(state.keys.lock_queue(ask))
            dm_line = await state.redis.llen(state.keys.lock_queue(dm_conversation))
            return ask_line == dm_line == 1

        async def one_handed_over() -> bool:
            return len(await handed_over(state)) == 1

        await eventually(both_wait_in_line)
        assert interaction.callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE
        await service.stop_intake()
        await eventually(lambda: restarting(interaction))
        await eventually(one_handed_over)
        [entry] = await handed_over(state, "0")  # DMs belong to shard 0
        assert entry.payload["to"] == {
            "channel": str(dm.id),
            "guild": None,
            "reference": str(message.id),
            "notify": True,
        }
        for conversation in (ask, dm_conversation):  # they left the line
            assert not await state.redis.exists(state.keys.lock_queue(conversation))
        await drain(service, grace=1.0)
        await service.close()
    for lock in (ask_lock, dm_lock):
        await lock.release()  # the other process's replies end
    async with start_bot():  # the next process takes the DM over
        await eventually(lambda: [m for m in bot_messages(fake, dm.id) if finished(m)])
    [reply] = bot_messages(fake, dm.id)
    assert answer(reply) == "Answered after the wait."
    assert (reply.message_reference or {}).get("message_id") == str(message.id)
    assert len(llm_server.requests) == 1


async def test_a_message_waiting_for_the_reply_ahead_is_handed_over_with_its_chain(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    """The follow-up waits for the reply ahead of it when the drain begins: it goes to
    the next process, which answers it in the same reply chain, the user's turn once."""
    llm_server.enqueue(
        stream([f"part {i}. " for i in range(40)], delay=0.1), stream(["The follow-up."])
    )
    async with start_bot() as service:
        question = await fake.inject_message(CHANNEL_ID, "tell me", ALICE, mentions_bot=True)
        await eventually(lambda: bot_messages(fake, CHANNEL_ID))
        [first] = bot_messages(fake, CHANNEL_ID)
        follow_up = await fake.inject_message(CHANNEL_ID, "and then?", ALICE, reply_to=first.id)
        chain = chain_conversation(GUILD_ID, CHANNEL_ID, question.id)
        line = state.keys.lock_queue(chain)

        async def waits_in_line() -> bool:
            return await state.redis.llen(line) == 1

        await eventually(waits_in_line)
        await service.stop_intake()

        async def one_handed_over() -> bool:
            return len(await handed_over(state)) == 1

        await eventually(one_handed_over)  # at once: it can't start here any more
        [entry] = await handed_over(state)
        assert entry.payload["conversation"]["thread"] == str(question.id)
        assert entry.payload["to"]["reference"] == str(follow_up.id)
        await drain(service, grace=0.2)
        await service.close()
    assert finished(first) and "interrupted" in state_line(first)
    async with start_bot():
        await eventually(lambda: reply_to(fake, follow_up.id))
    assert answer(reply_to(fake, follow_up.id)) == "The follow-up."  # type: ignore[arg-type]
    assert len(llm_server.requests) == 2
    context = llm_server.requests[1].json["messages"]
    assert [(m["role"], m["content"]) for m in context[1:]] == [
        ("user", "tell me"),
        ("assistant", "".join(f"part {i}. " for i in range(40))[: len(context[2]["content"])]),
        ("user", "and then?"),
    ]


async def test_without_redis_a_message_during_the_drain_is_told_to_ask_again(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def unavailable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Redis is down")

    async with start_bot() as service:
        monkeypatch.setattr(state.deferred, "push", unavailable)
        await service.stop_intake()
        question = await fake.inject_message(CHANNEL_ID, "anyone?", ALICE, mentions_bot=True)
        await eventually(lambda: bot_messages(fake, CHANNEL_ID))
        await service.close()
    [notice] = bot_messages(fake, CHANNEL_ID)
    assert notice.content == RESTARTING_TEXT
    assert (notice.message_reference or {}).get("message_id") == str(question.id)
    assert pings_nobody(notice.history[0].allowed_mentions)
    assert llm_server.requests == []


async def test_a_message_refused_after_its_lock_wait_is_handed_over(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    """``ShuttingDown`` from the responder after the wait (replies drain before the bot
    was told) hands the message over too."""
    llm_server.enqueue(stream([f"part {i}. " for i in range(40)], delay=0.1))
    async with start_bot() as service:
        question = await fake.inject_message(CHANNEL_ID, "tell me", ALICE, mentions_bot=True)
        await eventually(lambda: bot_messages(fake, CHANNEL_ID))
        [first] = bot_messages(fake, CHANNEL_ID)
        follow_up = await fake.inject_message(CHANNEL_ID, "and then?", ALICE, reply_to=first.id)
        line = state.keys.lock_queue(chain_conversation(GUILD_ID, CHANNEL_ID, question.id))

        async def waits_in_line() -> bool:
            return await state.redis.llen(line) == 1

        async def one_handed_over() -> bool:
            return len(await handed_over(state)) == 1

        await eventually(waits_in_line)
        await drain(service, grace=0.2)
        await eventually(one_handed_over)
        [entry] = await handed_over(state)
        assert entry.payload["to"]["reference"] == str(follow_up.id)
        await service.close()
    assert len(llm_server.requests) == 1
