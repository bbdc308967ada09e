"""Auto-reply channels for customer service: every customer message answered
(in a thread of its own, optionally) until a human agent takes over."""

from __future__ import annotations

import pytest

from core.config import ConfigError
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
    stream,
)
from tests.fakes.discord_server import (
    ALICE,
    BOB,
    CHANNEL_ID,
    GUILD_ID,
    INTENT_MESSAGE_CONTENT,
    FakeDiscord,
)
from tests.fakes.llm_server import FakeLLMServer


def support_rules(*, threads: bool) -> str:
    return (
        "[[channels]]\n"
        'platform = "discord"\n'
        f'id = "{CHANNEL_ID}"\n'
        'mode = "auto"\n'
        'system_prompt = "You are ACME support."\n'
        f'agents = ["{BOB.id}"]\n'
        f"thread_per_message = {'true' if threads else 'false'}\n"
    )


def finished_in(fake: FakeDiscord, channel_id: int) -> list[str]:
    return [answer(m) for m in bot_messages(fake, channel_id) if finished(m)]


async def test_a_customer_gets_a_thread_and_an_agent_takes_it_over_until_resume(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    llm_server.enqueue(stream(["How can I help?"]), stream(["Welcome back."]))
    handoffs = state.handoffs
    async with start_bot(support_rules(threads=True)) as service:
        assert fake.identifies[0]["intents"] & INTENT_MESSAGE_CONTENT  # needed to read them
        await fake.inject_message(CHANNEL_ID, "my order is late", ALICE)
        await eventually(lambda: [c for c in fake.channels.values() if c.parent_id == CHANNEL_ID])
        [thread] = [c for c in fake.channels.values() if c.parent_id == CHANNEL_ID]
        await eventually(lambda: finished_in(fake, thread.id) == ["How can I help?"])
        assert thread.name == "my order is late"
        conversation = ConversationKey("discord", str(GUILD_ID), str(thread.id))

        await fake.inject_message(thread.id, "I'll take it from here", BOB)
        await eventually(lambda: handoffs.is_handed_over(conversation))
        thanks = await fake.inject_message(thread.id, "thanks!", ALICE)
        assert await outcome_of(service, thanks) == "ignored"  # quiet while the agent has it
        assert len(llm_server.requests) == 1

        await fake.inject_message(thread.id, "resume", BOB, mentions_bot=True)
        await eventually(lambda: "I'm back in this conversation." in finished_in(fake, thread.id))
        await fake.inject_message(thread.id, "one more thing", ALICE)
        await eventually(lambda: "Welcome back." in finished_in(fake, thread.id))
    assert bot_messages(fake, CHANNEL_ID) == []  # everything happened in the thread
    assert every_write_limits_mentions(fake)  # the "I'm back" message too
    body = llm_server.requests[1].json
    assert body is not None
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "You are ACME support."),
        ("user", "my order is late"),
        ("assistant", "How can I help?"),
        ("user", "one more thing"),
    ]


async def test_without_threads_an_agents_reply_hands_the_chain_over(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(["Let me check."]))
    async with start_bot(support_rules(threads=False)) as service:
        question = await fake.inject_message(CHANNEL_ID, "where is my parcel?", ALICE)
        await eventually(lambda: finished_in(fake, CHANNEL_ID) == ["Let me check."])
        [reply] = bot_messages(fake, CHANNEL_ID)
        assert reply.message_reference is not None
        assert reply.message_reference["message_id"] == str(question.id)
        agent = await fake.inject_message(CHANNEL_ID, "on its way", BOB, reply_to=question.id)
        assert await outcome_of(service, agent) == "ignored"  # the chain is the agent's now
        thanks = await fake.inject_message(CHANNEL_ID, "thank you", ALICE, reply_to=reply.id)
        other = await fake.inject_message(CHANNEL_ID, "I'm an agent, no reply", BOB)
        assert await outcome_of(service, thanks) == "ignored"
        assert await outcome_of(service, other) == "ignored"
    assert len(llm_server.requests) == 1
    assert len(bot_messages(fake, CHANNEL_ID)) == 1


async def test_a_refused_message_content_intent_stops_start_up_with_one_clear_line(
    fake: FakeDiscord, start_bot: StartBot
) -> None:
    fake.allow_privileged_intents = False
    with pytest.raises(ConfigError, match="MESSAGE_CONTENT"):
        async with start_bot(support_rules(threads=False)):
            pass


async def test_a_token_discord_refuses_stops_start_up_with_one_clear_line(
    start_bot: StartBot,
) -> None:
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN"):
        async with start_bot(discord_bot_token="not-the-token"):
            pass
