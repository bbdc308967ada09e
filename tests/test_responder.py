"""The responder's order of things, against a real Redis and a model over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.clock import MonotonicClock
from core.llm.client import LLMClient
from core.llm.events import Usage
from core.reply.sink import Sink
from core.service.responder import BUSY_TEXT, ReplyRequest, Responder
from core.state.keys import ConversationKey, Keys
from core.state.settings import load_state_settings
from core.state.store import State, open_state
from tests.fakes.llm_server import FakeLLMServer, FakeResponse
from tests.fakes.recording_sink import RecordingSink
from tests.fakes.streams import chat_stream, split_events
from tests.state.conftest import keys, redis, redis_url

__all__ = ["keys", "redis", "redis_url"]

CONVERSATION = ConversationKey("slack", "T1", "C1", "1.0")


@pytest.fixture
async def state(redis_url: str, keys: Keys, redis: Redis) -> AsyncIterator[State]:
    settings = load_state_settings(redis_url=redis_url, redis_prefix=keys.prefix)
    async with open_state(settings) as opened:
        yield opened


def request(conversation: ConversationKey = CONVERSATION, **kwargs: object) -> ReplyRequest:
    return ReplyRequest(
        platform="slack",
        conversation=conversation,
        author="U1",
        text="hello?",
        channel="C1",
        system_prompt="be brief",
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_reply_whose_lock_another_reply_took_does_not_stream_beside_it(
    state: State, llm: LLMClient, llm_server: FakeLLMServer, redis: Redis
) -> None:
    """After a long Redis outage another replica may hold the conversation: the
    reply finds out before it streams and says so instead of answering twice."""
    sinks: list[RecordingSink] = []

    def make_sink(reply_id: str) -> Sink:
        sinks.append(RecordingSink(MonotonicClock()))
        return sinks[-1]

    async def taken_meanwhile() -> None:
        await redis.set(state.keys.lock(CONVERSATION), "another-replica's-token", px=30_000)

    result = await Responder(state, llm).respond(request(prepare=taken_meanwhile), make_sink)
    assert result.text == BUSY_TEXT
    assert sinks[-1].texts() == [BUSY_TEXT]
    assert llm_server.requests == []  # the model was never asked
    assert await state.conversations.history(CONVERSATION) == []  # nothing stored


async def test_an_answer_is_stored_after_it_was_shown(
    state: State, llm: LLMClient, llm_server: FakeLLMServer
) -> None:
    llm_server.enqueue(FakeResponse(chunks=split_events(chat_stream(["Hi", " there."]))))
    sink = RecordingSink(MonotonicClock())
    result = await Responder(state, llm).respond(request(), lambda reply_id: sink)
    assert result.delivered and sink.texts() == ["Hi there."]
    history = await state.conversations.history(CONVERSATION)
    assert [(t.role, t.text) for t in history] == [("user", "hello?"), ("assistant", "Hi there.")]
    assert await state.redis.zcard(state.keys.inflight_beats("slack")) == 0  # settled


async def test_quotas_are_kept_per_platform_and_workspace(
    redis_url: str, keys: Keys, redis: Redis, llm: LLMClient, llm_server: FakeLLMServer
) -> None:
    """User ids repeat across workspaces: U1 over quota in T1 is not over it in T2."""
    settings = load_state_settings(
        redis_url=redis_url, redis_prefix=keys.prefix, quota_user_daily_tokens=100
    )
    async with open_state(settings) as state:
        await state.usage.record(user="slack:T1:U1", channel="slack:T1:C1", usage=Usage(90, 20))
        llm_server.enqueue(FakeResponse(chunks=split_events(chat_stream(["Hi."]))))
        responder = Responder(state, llm)
        refused = RecordingSink(MonotonicClock())
        await responder.respond(request(), lambda reply_id: refused)
        elsewhere = RecordingSink(MonotonicClock())
        other = ConversationKey("slack", "T2", "C1", "1.0")
        await responder.respond(request(conversation=other), lambda reply_id: elsewhere)
    assert len(llm_server.requests) == 1  # only T2's message reached the model
    assert elsewhere.texts() == ["Hi."]
    assert refused.texts()[0].startswith("Sorry, you have used today's allowance of 100 tokens")


async def test_an_answer_cancelled_before_its_reply_was_recorded_is_handed_over(
    state: State, llm: LLMClient, llm_server: FakeLLMServer
) -> None:
    """The process exits while a message waits (here: its thread is being read
    back): the message was acknowledged and claimed, and nobody else knows of
    it, so it goes to the next process rather than nowhere."""
    waiting = asyncio.Event()

    async def read_back_forever() -> None:
        waiting.set()
        await asyncio.Event().wait()

    handover = {"v": 1, "text": "hello?"}
    answering = asyncio.create_task(
        Responder(state, llm).answer(
            request(prepare=read_back_forever, handover=handover),
            lambda reply_id: RecordingSink(MonotonicClock()),
        )
    )
    await asyncio.wait_for(waiting.wait(), 5)
    answering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answering
    [handed] = await state.deferred.take("slack", "")
    assert handed.payload == handover
    assert llm_server.requests == []


async def test_an_answer_cancelled_after_its_reply_was_recorded_is_left_to_the_registry(
    state: State, llm: LLMClient, llm_server: FakeLLMServer
) -> None:
    """Once in flight, the reply's record (with the same payload) is what another
    process finishes or answers anew: handing it over too would answer twice."""
    llm_server.enqueue(
        FakeResponse(chunks=split_events(chat_stream(["Hi", " there."])), first_byte_delay=30)
    )
    sink = RecordingSink(MonotonicClock())
    answering = asyncio.create_task(
        Responder(state, llm).answer(request(handover={"v": 1}), lambda reply_id: sink)
    )
    records = state.keys.inflight_records("slack")
    for _ in range(250):
        if await state.redis.hlen(records):
            break
        await asyncio.sleep(0.02)
    assert await state.redis.hlen(records) == 1
    answering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answering
    assert await state.deferred.take("slack", "") == []
