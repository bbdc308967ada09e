"""Mentions, reply chains, DMs and who may ask: which messages get a reply, where,
and with what context."""

from __future__ import annotations

from core.llm.client import LLMClient
from core.state.keys import ConversationKey
from core.state.store import State
from tests.discord.conftest import (
    StartBot,
    answer,
    bot_messages,
    eventually,
    every_write_limits_mentions,
    finished,
    outcome_of,
    pings_nobody,
    state_line,
    stream,
)
from tests.fakes.discord_server import (
    ALICE,
    BOB,
    CHANNEL_ID,
    GUILD_ID,
    INTENT_DIRECT_MESSAGES,
    INTENT_MESSAGE_CONTENT,
    OTHER_CHANNEL_ID,
    FakeDiscord,
    MessageRecord,
)
from tests.fakes.llm_server import FakeLLMServer

PIECES = ["Hello", " there", ", this", " is", " the", " answer", "."]
ANSWER = "".join(PIECES)


def reply_to(fake: FakeDiscord, channel_id: int, message_id: int) -> MessageRecord | None:
    """The bot's message replying to ``message_id``, once it is finished."""
    for message in bot_messages(fake, channel_id):
        reference = message.message_reference or {}
        if reference.get("message_id") == str(message_id) and finished(message):
            return message
    return None


def contents(llm_server: FakeLLMServer, index: int) -> list[tuple[str, str]]:
    """(role, content) of every message the model got in request ``index``."""
    body = llm_server.requests[index].json
    assert body is not None
    return [(m["role"], m["content"]) for m in body["messages"]]


async def test_a_mention_gets_a_streamed_reply_and_a_reply_to_it_carries_the_context(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES, delay=0.1), stream(["It", " continues."]))
    async with start_bot():
        question = await fake.inject_message(CHANNEL_ID, "what is up?", ALICE, mentions_bot=True)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, question.id))
        first = reply_to(fake, CHANNEL_ID, question.id)
        assert first is not None
        follow_up = await fake.inject_message(CHANNEL_ID, "and then?", ALICE, reply_to=first.id)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, follow_up.id))
    second = reply_to(fake, CHANNEL_ID, follow_up.id)
    assert second is not None
    assert answer(first) == ANSWER
    assert len(first.edits) >= 2  # it grew while the model wrote
    assert answer(second) == "It continues."
    assert contents(llm_server, 0)[1:] == [("user", "what is up?")]  # the mention is stripped
    assert contents(llm_server, 1)[1:] == [
        ("user", "what is up?"),
        ("assistant", ANSWER),
        ("user", "and then?"),
    ]
    # The answer notifies the asker (a reply), and nobody else, on every send and edit.
    for message in (first, second):
        assert all(pings_nobody(r.allowed_mentions, replied_user=True) for r in message.history)
        assert message.mentions == [ALICE.id]
    assert fake.identifies[0]["intents"] & INTENT_MESSAGE_CONTENT == 0  # not needed here


async def test_a_chain_the_bot_no_longer_remembers_is_read_back_from_discord(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    llm_server.enqueue(stream(["First answer."]), stream(["Second answer."]))
    async with start_bot():
        question = await fake.inject_message(CHANNEL_ID, "first question", ALICE, mentions_bot=True)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, question.id))
        first = reply_to(fake, CHANNEL_ID, question.id)
        assert first is not None
        chain = ConversationKey("discord", str(GUILD_ID), str(CHANNEL_ID), str(question.id))

        async def answered() -> bool:  # the answer is stored just after its last edit
            return len(await state.conversations.history(chain)) == 2

        await eventually(answered)
        # Memory lost (expired, or Redis replaced): nothing of this chain is left.
        forgotten = [key async for key in state.redis.scan_iter(match=f"{state.keys.prefix}*")]
        await state.redis.delete(*forgotten)
        follow_up = await fake.inject_message(CHANNEL_ID, "second question", BOB, reply_to=first.id)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, follow_up.id))
    assert contents(llm_server, 1)[1:] == [
        ("user", "first question"),
        ("assistant", "First answer."),
        ("user", "second question"),
    ]


async def test_messages_not_addressed_to_the_bot_are_left_alone(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(["Hi Alice."]))
    # With MESSAGE_CONTENT, so the bot reads them and must decide they are not for it.
    async with start_bot(discord_message_content="on") as service:
        question = await fake.inject_message(CHANNEL_ID, "hello bot", ALICE, mentions_bot=True)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, question.id))
        chatting = await fake.inject_message(CHANNEL_ID, "just chatting", BOB)
        me_too = await fake.inject_message(CHANNEL_ID, "me too", BOB, reply_to=question.id)
        assert await outcome_of(service, chatting) == "ignored"
        assert await outcome_of(service, me_too) == "ignored"
    assert len(llm_server.requests) == 1
    assert len(bot_messages(fake, CHANNEL_ID)) == 1


async def test_dms_continue_naturally_and_can_be_switched_off(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    dm = fake.add_dm_channel(BOB)
    llm_server.enqueue(stream(["Hi Bob."]), stream(["Still here."]))
    async with start_bot():
        await fake.inject_message(dm.id, "hi", BOB)
        await eventually(lambda: [m for m in bot_messages(fake, dm.id) if finished(m)])
        await fake.inject_message(dm.id, "are you there?", BOB)
        await eventually(lambda: len([m for m in bot_messages(fake, dm.id) if finished(m)]) == 2)
    assert [answer(m) for m in bot_messages(fake, dm.id)] == ["Hi Bob.", "Still here."]
    assert contents(llm_server, 1)[1:] == [
        ("user", "hi"),
        ("assistant", "Hi Bob."),
        ("user", "are you there?"),
    ]
    assert fake.identifies[0]["intents"] & INTENT_DIRECT_MESSAGES

    async with start_bot(discord_dms=False) as service:
        await fake.inject_message(dm.id, "hello again", BOB)
        # Events reach the bot in order: once a later one is handled, the DM would
        # have been received (and counted) if the gateway had sent it.
        later = await fake.inject_message(CHANNEL_ID, "unrelated", ALICE)
        assert await outcome_of(service, later) == "ignored"
        assert service.events.intake.counts["received"] == 1
    assert len(llm_server.requests) == 2
    assert fake.identifies[1]["intents"] & INTENT_DIRECT_MESSAGES == 0


async def test_block_and_allow_lists(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(["For Alice."]))
    async with start_bot(discord_blocked_users=str(BOB.id)) as service:
        blocked = await fake.inject_message(CHANNEL_ID, "hi", BOB, mentions_bot=True)
        allowed = await fake.inject_message(CHANNEL_ID, "hi", ALICE, mentions_bot=True)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, allowed.id))
        assert await outcome_of(service, blocked) == "ignored"
    assert reply_to(fake, CHANNEL_ID, blocked.id) is None
    async with start_bot(discord_allowed_channels=str(OTHER_CHANNEL_ID)) as service:
        elsewhere = await fake.inject_message(CHANNEL_ID, "hi again", ALICE, mentions_bot=True)
        assert await outcome_of(service, elsewhere) == "ignored"
    assert len(llm_server.requests) == 1


async def test_a_channel_the_bot_cannot_write_in_costs_no_model_call_and_no_403(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    fake.channels[OTHER_CHANNEL_ID].bot_can_send = False
    async with start_bot() as service:
        mute = await fake.inject_message(OTHER_CHANNEL_ID, "answer me", ALICE, mentions_bot=True)
        assert await outcome_of(service, mute) == "ignored"
    assert llm_server.requests == []
    assert fake.invalid_requests == 0


async def test_model_output_never_pings_anyone(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    role = fake.guilds[GUILD_ID].bot_role_id
    pieces = ["Hey @every", "one and @here, ", f"<@&{role}> and <@{BOB.id}>", " <@!", f"{BOB.id}>"]
    llm_server.enqueue(stream(pieces, delay=0.15))
    async with start_bot():
        question = await fake.inject_message(CHANNEL_ID, "ping them", ALICE, mentions_bot=True)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, question.id))
    reply = reply_to(fake, CHANNEL_ID, question.id)
    assert reply is not None
    assert answer(reply) == "".join(pieces)  # shown as text, zero-width spaces aside
    assert "@everyone" not in reply.content and f"<@{BOB.id}>" not in reply.content
    assert len(reply.history) >= 3
    for revision in reply.history:
        assert not revision.mention_everyone
        assert revision.mentions in ([], [ALICE.id])  # at most the asker, as a reply
    assert reply.mention_roles == []
    assert every_write_limits_mentions(fake)


async def test_a_model_error_mid_reply_keeps_the_text_and_shows_the_failure(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES, error_after=3, error_message="upstream overloaded"))
    async with start_bot():
        question = await fake.inject_message(CHANNEL_ID, "go", ALICE, mentions_bot=True)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, question.id))
    reply = reply_to(fake, CHANNEL_ID, question.id)
    assert reply is not None
    assert answer(reply) == "".join(PIECES[:3])
    assert "failed" in state_line(reply) and "upstream overloaded" in state_line(reply)
    assert reply.components == []


async def test_embeds_mode_shows_the_answer_and_state_in_an_embed(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES, delay=0.1))
    async with start_bot(discord_render="embeds"):
        question = await fake.inject_message(CHANNEL_ID, "embed it", ALICE, mentions_bot=True)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, question.id))
    reply = reply_to(fake, CHANNEL_ID, question.id)
    assert reply is not None
    assert reply.content == ""
    [embed] = reply.embeds
    assert embed["description"] == ANSWER
    assert "footer" not in embed  # a plain success needs no state line
    streaming = [r for r in reply.history if r.components]
    assert streaming and all("writing" in r.embeds[0]["footer"]["text"] for r in streaming)


async def test_two_processes_on_one_shard_answer_an_event_once(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES), stream(["duplicate"]))
    async with start_bot() as one, start_bot() as two:
        assert len(fake.identifies) == 2
        question = await fake.inject_message(CHANNEL_ID, "once please", ALICE, mentions_bot=True)
        outcomes = {await outcome_of(one, question), await outcome_of(two, question)}
        assert outcomes == {"answered", "deduplicated"}
    assert len(llm_server.requests) == 1
    assert len(bot_messages(fake, CHANNEL_ID)) == 1


async def test_reset_forgets_the_conversation(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    dm = fake.add_dm_channel(ALICE)
    llm_server.enqueue(stream(["Noted."]), stream(["Fresh start."]))
    async with start_bot():
        await fake.inject_message(dm.id, "remember 42", ALICE)
        await eventually(lambda: [m for m in bot_messages(fake, dm.id) if finished(m)])
        conversation = ConversationKey("discord", "dm", str(dm.id))

        async def answer_stored() -> bool:  # the answer is stored after it is shown
            return len(await state.conversations.history(conversation)) == 2

        await eventually(answer_stored)
        reset = await fake.inject_slash_command(
            "reset", user=ALICE, channel_id=dm.id, guild_id=None
        )
        await eventually(lambda: reset.acknowledged)
        await fake.inject_message(dm.id, "what did I say?", ALICE)
        await eventually(lambda: len([m for m in bot_messages(fake, dm.id) if finished(m)]) == 2)
    assert reset.callback_data is not None and "forgotten" in reset.callback_data["content"]
    assert contents(llm_server, 1)[1:] == [("user", "what did I say?")]


async def test_model_picks_the_model_of_later_replies_in_the_channel(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, llm: LLMClient
) -> None:
    llm_server.enqueue(stream(["From the big one."]))
    async with start_bot(discord_models=["small-model", "big-model"]):
        assert {c["name"] for c in fake.commands} == {"ask", "reset", "model"}
        choice = await fake.inject_slash_command("model", {"name": "big-model"})
        await eventually(lambda: choice.acknowledged)
        question = await fake.inject_message(CHANNEL_ID, "who are you?", ALICE, mentions_bot=True)
        await eventually(lambda: reply_to(fake, CHANNEL_ID, question.id))
    body = llm_server.requests[0].json
    assert body is not None and body["model"] == "big-model"
