"""The delivery promise on Slack under faults: 429s, 5xx, ``internal_error``,
dropped connections, Slack's own Stop and an outage at the end of a reply,
checked by the invariant checker (``tests.invariants``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.api import SafeWebClient
from bots.slack.sink import MESSAGE_LIMIT, STREAM_BYTES, SlackReplySink, SlackTarget
from core.reply.engine import FinalRetry
from core.reply.sink import Frame, Outcome, Reroute, SinkCall
from core.state.store import State
from tests.fakes.llm_server import FakeLLMServer, FakeResponse
from tests.fakes.slack_server import FakeSlack, Message
from tests.fakes.streams import chat_stream, chunk_text, split_events
from tests.invariants import NOTES, Expected, assert_slack, check_slack, notes_of
from tests.slack.conftest import RunningBot
from tests.slack.test_slack_adapter import socket_mode

StartBot = Callable[..., AbstractAsyncContextManager[RunningBot]]

MENTIONS = (
    "Write to alice.smith@example.org or bob@example.com please, then tell <!channel> "
    "and <!here> and <@U123ABC> and @here and @everyone that <!subteam^S0123ABC> knows. "
)


def model(text: str, *, seed: int, delay: float = 0.03) -> FakeResponse:
    pieces = chunk_text(text, seed=seed, max_size=7)
    return FakeResponse(chunks=split_events(chat_stream(pieces)), chunk_delay=delay)


async def replies_finished(slack: FakeSlack, count: int, within: float = 30.0) -> None:
    """``count`` replies show their ending (feedback buttons or a note) and nothing
    streams or shows Stop any more: waits on the fake's changes, bounded."""

    def finished() -> bool:
        messages = slack.bot_messages("C1")
        ended = [m for m in messages if _feedback(m) or any(n in notes_of(m) for n in NOTES)]
        return len(ended) >= count and not any(m.streaming or _controls(m) for m in messages)

    await slack.wait_for(finished, timeout=within)


def _feedback(message: Message) -> bool:
    return any(b.get("block_id") == "chatrelay_feedback" for b in message.blocks or [])


def _controls(message: Message) -> bool:
    return any(b.get("block_id") == "chatrelay_controls" for b in message.blocks or [])


@pytest.mark.parametrize("native", [True, False], ids=["native", "post+edit"])
async def test_429s_5xx_and_internal_errors_lose_no_text_and_ping_nobody(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot, native: bool
) -> None:
    """The first break of the delivery issue: 3 of 3 replies ended with wrong text
    (``alice.smithmple.org``) and ``text`` carried mentions unneutralised."""
    slack.native_streaming = native
    texts = [MENTIONS * 2, MENTIONS, "Short: <!channel> ok @here."]
    for seed, text in enumerate(texts):
        llm_server.enqueue(model(text, seed=seed))
    methods = ["chat.appendStream", "chat.startStream", "chat.stopStream", "chat.update"]
    slack.faults.schedule(
        "text-faults",
        methods,
        p_429=0.2,
        p_500=0.1,
        p_internal_error=0.1,
        p_drop=0.05,
        retry_after=0.2,
        max_run=2,
    )
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        events = []
        for i in range(len(texts)):
            event = slack.user_message("C1", f"question {i}", user=f"U{i + 1}", mention=True)
            events.append(event)
            await slack.deliver_socket(event)
            # One at a time into the model, so reply i gets text i; they stream together.
            await llm_server.wait_requests(i + 1)
        await replies_finished(slack, len(texts))
    assert slack.faults.count() > 0, "the schedule injected nothing"
    assert_slack(slack, "C1", {e["ts"]: Expected(t) for e, t in zip(events, texts, strict=True)})


async def test_slacks_own_stop_keeps_a_prefix_without_repeating_the_held_tail(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    text = " ".join(f"w{i}@host{i}" for i in range(200))
    llm_server.enqueue(model(text, seed=3, delay=0.02))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        event = slack.user_message("C1", "go", mention=True)
        await slack.deliver_socket(event)
        await slack.wait_for(lambda: len(slack.calls_to("chat.appendStream", ok=True)) >= 3)
        [reply] = slack.bot_messages("C1")
        slack.user_stops_stream(reply.ts)
        await replies_finished(slack, 1)
    assert_slack(slack, "C1", {event["ts"]: Expected(text, may_end_early=True)})
    [reply] = slack.bot_messages("C1")
    assert "⏹️ Stopped." in slack.rendered("C1", reply.ts)


async def test_an_outage_at_the_end_of_a_reply_is_finished_once_slack_is_back(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot, state: State
) -> None:
    """The final frame fails longer than the reply retries it: it stays in the
    in-flight registry and the sweeper finishes it when Slack answers again."""
    state.inflight.backoff = (0.2, 0.4)
    llm_server.enqueue(model("The whole answer, nothing less.", seed=1))
    slack.faults.add("chat.stopStream", "500", count=None)
    retry = FinalRetry(attempts=3, backoff=0.05, give_up_after=1.0)
    async with (
        make_bot(slack_app_token="xapp-test", retry=retry) as running,
        socket_mode(running, slack),
    ):
        event = slack.user_message("C1", "go", mention=True)
        await slack.deliver_socket(event)
        beats = state.keys.inflight_beats("slack")
        # The reply gave up and left its final state for the sweeper, which keeps failing.
        await slack.wait_for(lambda: slack.faults.count("chat.stopStream") >= 5, timeout=15)
        assert await state.redis.zcard(beats) == 1
        assert check_slack(slack, "C1", {event["ts"]: Expected("x")})  # not finished yet
        slack.faults.clear()  # Slack is back
        await replies_finished(slack, 1)
        for _ in range(100):  # the record goes once the sweeper's calls succeeded
            if not await state.redis.zcard(beats):
                break
            await asyncio.sleep(0.05)
    assert await state.redis.zcard(beats) == 0
    assert_slack(slack, "C1", {event["ts"]: Expected("The whole answer, nothing less.")})


async def test_a_closed_stream_is_recovered_through_chat_update_s_budget(
    slack: FakeSlack,
) -> None:
    """Every call the sink may make is one it named in ``scopes``: after Slack
    closed the stream, the recovery is an edit, charged to ``chat.update``."""
    client = SafeWebClient(token="xoxb-test", base_url=slack.api_url)
    target = SlackTarget("T1", "C1", "1700000000.000001", recipient_user="U1")
    sink = SlackReplySink(client=client, target=target, reply_id="r1")
    await sink.open()
    assert sink.scopes(SinkCall.CREATE, 0) == ["slack:T1:chat.startStream"]
    await sink.render(Frame(0, "Hello", "Hello", False))
    assert sink.scopes(SinkCall.UPDATE, 0) == ["slack:T1:chat.appendStream"]
    slack.stream_ttl = 0.0  # Slack closes the stream early
    with pytest.raises(Reroute):
        await sink.render(Frame(0, "Hello world", " world", False, sent=5))
    assert sink.scopes(SinkCall.UPDATE, 0) == ["slack:T1:chat.update"]
    assert sink.scopes(SinkCall.FINISH, 0) == ["slack:T1:chat.update"]
    await sink.render(Frame(0, "Hello world", " world", False, sent=5))
    [ts] = sink.timestamps
    assert slack.calls_to("chat.update", ok=True)[-1].params["ts"] == ts
    assert "Hello world" in slack.rendered("C1", ts)


async def test_a_roll_over_names_both_calls_and_resumes_at_the_second(
    slack: FakeSlack,
) -> None:
    now = [0.0]

    class Clock:
        def now(self) -> float:
            return now[0]

    client: AsyncWebClient = SafeWebClient(token="xoxb-test", base_url=slack.api_url)
    target = SlackTarget("T1", "C1", "1700000000.000001", recipient_user="U1")
    sink = SlackReplySink(
        client=client,
        target=target,
        reply_id="r1",
        clock=Clock(),
        rollover_after=10,  # type: ignore[arg-type]
    )
    await sink.open()
    await sink.render(Frame(0, "one ", "one ", False))
    now[0] = 11.0
    assert sink.scopes(SinkCall.UPDATE, 0) == [
        "slack:T1:chat.stopStream",
        "slack:T1:chat.startStream",
    ]
    slack.faults.add("chat.startStream", "429", retry_after=0.1)
    with pytest.raises(Exception, match="rate limited"):
        await sink.render(Frame(0, "one two ", "two ", False, sent=4))
    # The old stream is stopped; only the new stream's start is left to do.
    assert sink.scopes(SinkCall.UPDATE, 0) == ["slack:T1:chat.startStream"]
    await sink.render(Frame(0, "one two ", "two ", False, sent=4))
    await sink.finish(Frame(0, "one two three", "three", True, sent=8), Outcome("done"))
    texts = [m.markdown for m in slack.bot_messages("C1")]
    assert texts == ["one ", "two three"]
    assert not any(m.streaming for m in slack.bot_messages("C1"))


async def test_a_12000_byte_streamed_reply_rolls_over_before_slacks_cap(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    """Slack refuses appends to a streamed message somewhere past 10.6k UTF-8
    bytes: multi-byte text gets there far within the character limit."""
    text = "日本語のテキストです。" * 400  # 4,400 characters, 13,200 bytes
    assert len(text) < MESSAGE_LIMIT < len(text.encode())
    llm_server.enqueue(model(text, seed=5, delay=0.002))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        event = slack.user_message("C1", "write", mention=True)
        await slack.deliver_socket(event)
        await replies_finished(slack, 1)
    replies = slack.bot_messages("C1")
    assert len(replies) == 2
    assert all(len(m.markdown.encode()) <= STREAM_BYTES for m in replies)
    assert all(m.source == "stream" and not m.streaming for m in replies)
    assert not [c for c in slack.calls if c.response.get("error") == "msg_too_long"]
    assert_slack(slack, "C1", {event["ts"]: Expected(text)})


async def test_a_stream_slack_refuses_as_too_long_is_recovered_with_an_edit(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    """Slack's cap is undocumented: if it is lower than ours, the refused append
    is treated like a closed stream, and the message is finished by chat.update."""
    slack.stream_byte_cap = 3_000
    text = "ünïcödé wörds ärë lönġër. " * 200  # about 6,400 bytes
    llm_server.enqueue(model(text, seed=6, delay=0.002))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        event = slack.user_message("C1", "write", mention=True)
        await slack.deliver_socket(event)
        await replies_finished(slack, 1)
    assert [c for c in slack.calls if c.response.get("error") == "msg_too_long"]
    assert slack.calls_to("chat.update", ok=True)
    assert_slack(slack, "C1", {event["ts"]: Expected(text)})
