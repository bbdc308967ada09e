"""The Slack adapter end to end: real slack_bolt/slack_sdk against the fake Slack,
a fake model over HTTP and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.finalise import finalise_record
from bots.slack.limits import DEFAULT_LIMITS
from bots.slack.service import EVENTS_PATH
from core.reply.budget import Limit, LocalBudget
from core.service.lifecycle import ActiveReplies
from core.state.inflight import INTERRUPTED_REASON, InflightRecord, MessageRecord
from core.state.keys import ConversationKey
from core.state.store import State
from tests.fakes.llm_server import FakeLLMServer, FakeResponse
from tests.fakes.slack_server import FakeSlack, Message, assistant_thread_started
from tests.fakes.slack_server import Limit as FakeLimit
from tests.fakes.streams import chat_stream, split_events
from tests.invariants import Expected, assert_slack
from tests.slack.conftest import SECRET, RunningBot

PIECES = ["Hello", " there", ", this", " is", " the", " answer", "."]
ANSWER = "".join(PIECES)

StartBot = Callable[..., AbstractAsyncContextManager[RunningBot]]


def answer_of(message: Message) -> str:
    """The model text a message shows: streamed markdown, or its markdown blocks."""
    if message.source == "stream":
        return message.markdown
    return "".join(b["text"] for b in message.blocks or [] if b.get("type") == "markdown")


def feedback_shown(message: Message) -> bool:
    """Feedback buttons mean the reply finished."""
    return any(b.get("block_id") == "chatrelay_feedback" for b in message.blocks or [])


def finals(slack: FakeSlack, channel: str) -> list[str]:
    """The text of every finished post+edit reply."""
    return [answer_of(m) for m in slack.bot_messages(channel) if feedback_shown(m)]


def stream(pieces: list[str], delay: float = 0.02, **kwargs: Any) -> FakeResponse:
    return FakeResponse(chunks=split_events(chat_stream(pieces, **kwargs)), chunk_delay=delay)


@asynccontextmanager
async def socket_mode(running: RunningBot, slack: FakeSlack) -> AsyncIterator[None]:
    """While the bot's Socket Mode connection is up: ``make_bot`` serves Slack as
    ``chatrelay run`` does, so given an app token it connected already (and closes
    the connection when it ends)."""
    assert running.service.socket is not None, "Socket Mode needs make_bot(slack_app_token=...)"
    await slack.wait_connected(timeout=5)
    yield


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll an async condition (the handler runs after Slack's ack) within a bound."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the condition lives in Redis
            await asyncio.sleep(0.02)


async def settled(running: RunningBot, **outcomes: int) -> None:
    """Until the bot's intake log counts these outcomes (bounded): waits for the
    bot to have dealt with every delivery instead of guessing how long it takes."""

    async def counted() -> bool:
        counts = running.events.intake.counts
        return all(counts[outcome] >= n for outcome, n in outcomes.items())

    await eventually(counted)
    assert {k: running.events.intake.counts[k] for k in outcomes} == outcomes


async def finished(slack: FakeSlack, method: str, count: int = 1) -> None:
    await slack.wait_calls(method, count=count, timeout=15)


async def test_mention_over_socket_mode_streams_natively_in_the_thread(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES, delay=0.25))  # slower than the edit interval: appends
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        event = slack.user_message("C1", "what is up?", user="U1", mention=True)
        await slack.deliver_socket(event)
        await finished(slack, "chat.stopStream")
    [reply] = slack.bot_messages("C1")
    assert reply.thread_ts == event["ts"]
    assert answer_of(reply) == ANSWER
    assert len(slack.calls_to("chat.appendStream", ok=True)) >= 1
    start = slack.calls_to("chat.startStream")[0]
    assert start.params["recipient_user_id"] == "U1"
    assert start.params["recipient_team_id"] == "T1"
    sent = llm_server.requests[0].json
    assert sent is not None
    assert sent["messages"][-1]["content"] == "what is up?"  # the mention is stripped
    # "is thinking…" showed under the mention before any message: no empty placeholder
    status, cleared = slack.statuses[("C1", event["ts"])]
    assert status.status == "is thinking…" and status.time <= start.time
    assert cleared.status == "" and slack.status("C1", event["ts"]) == ""  # by the reply
    assert start.params["markdown_text"]  # the stream starts with the first text
    assert sum(slack.rate_limited.values()) == 0


async def test_signed_http_mention_with_retries_gives_one_reply(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    from aiohttp.test_utils import TestServer

    llm_server.enqueue(stream(PIECES))
    async with make_bot() as running:
        server = TestServer(running.web_app, host="127.0.0.1")
        await server.start_server()
        try:
            url = str(server.make_url(EVENTS_PATH))
            event = slack.user_message("C1", "hi", user="U1", mention=True)
            statuses = [
                await slack.deliver_http(url, event, signing_secret=SECRET, event_id="Ev1"),
                await slack.deliver_http(
                    url,
                    event,
                    signing_secret=SECRET,
                    event_id="Ev1",
                    retry_num=1,
                    retry_reason="http_timeout",
                ),
                await slack.deliver_http(
                    url,
                    event,
                    signing_secret=SECRET,
                    event_id="Ev1",
                    retry_num=2,
                    retry_reason="http_timeout",
                ),
            ]
            forged = await slack.deliver_http(url, event, signing_secret="wrong", event_id="Ev2")
            await finished(slack, "chat.stopStream")
            # Every delivery was dealt with: one answered, the two retries dropped.
            await settled(running, answered=1, deduplicated=2)
        finally:
            await server.close()
    assert statuses == [200, 200, 200]
    assert forged == 401
    assert len(slack.bot_messages("C1")) == 1
    assert len(llm_server.requests) == 1
    assert answer_of(slack.bot_messages("C1")[0]) == ANSWER


async def test_workspace_without_native_streaming_falls_back_to_edits(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    slack.native_streaming = False
    llm_server.enqueue(stream(PIECES, delay=0.1))
    llm_server.enqueue(stream(["Second", " reply."]))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        await slack.deliver_socket(slack.user_message("C1", "one", mention=True))
        await slack.wait_for(lambda: len(llm_server.requests) == 1, timeout=5)
        await slack.wait_for(lambda: finals(slack, "C1") == [ANSWER], timeout=15)
        await slack.deliver_socket(slack.user_message("C1", "two", mention=True))
        await slack.wait_for(lambda: finals(slack, "C1") == [ANSWER, "Second reply."], 15)
    # the workspace was remembered: the second reply did not try streaming again
    assert len(slack.calls_to("chat.startStream")) == 1
    assert all(m.source != "stream" for m in slack.bot_messages("C1"))
    assert slack.calls_to("chat.update", ok=True)
    final = slack.bot_messages("C1")[0].blocks or []
    assert not any(b.get("block_id") == "chatrelay_controls" for b in final)  # Stop removed


async def test_model_error_mid_reply_keeps_text_and_says_what_went_wrong(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES, error_after=3, error_message="upstream overloaded"))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        await slack.deliver_socket(slack.user_message("C1", "go", mention=True))
        await finished(slack, "chat.stopStream")
    [reply] = slack.bot_messages("C1")
    assert answer_of(reply) == "".join(PIECES[:3])
    assert "upstream overloaded" in slack.rendered("C1", reply.ts)
    assert "failed" in slack.rendered("C1", reply.ts)


async def test_stop_button_stops_the_reply(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    slack.native_streaming = False
    llm_server.enqueue(stream(["word "] * 200, delay=0.05))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        await slack.deliver_socket(slack.user_message("C1", "talk a lot", mention=True))
        await slack.wait_for(lambda: slack.calls_to("chat.update", ok=True), timeout=10)
        [reply] = slack.bot_messages("C1")
        button = next(b for b in reply.blocks or [] if b.get("block_id") == "chatrelay_controls")
        reply_id = button["elements"][0]["value"]
        await slack.deliver_interaction(
            slack.block_actions("C1", reply.ts, "chatrelay_stop", user="U1", value=reply_id)
        )
        await llm_server.wait_disconnect(timeout=3)
        await slack.wait_for(lambda: "Stopped" in slack.rendered("C1", reply.ts), timeout=5)
    text = answer_of(slack.bot_messages("C1")[0])
    assert text and ("word " * 200).startswith(text)
    assert len(text) < len("word " * 200)


async def test_human_agent_takes_over_an_auto_reply_thread(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    rules = '[[channels]]\nplatform = "slack"\nid = "CSUP"\nmode = "auto"\nagents = ["UAGENT"]\n'
    llm_server.enqueue(stream(["How can I help?"]))
    llm_server.enqueue(stream(["Welcome back."]))
    async with make_bot(rules, slack_app_token="xapp-test") as running, socket_mode(running, slack):
        question = slack.user_message("CSUP", "my order is late", user="UCUST")
        await slack.deliver_socket(question)
        await finished(slack, "chat.stopStream")
        agent = slack.user_message("CSUP", "I'll take it", user="UAGENT", thread_ts=question["ts"])
        await slack.deliver_socket(agent)
        conversation = ConversationKey("slack", "T1", "CSUP", question["ts"])
        await eventually(lambda: running.state.handoffs.is_handed_over(conversation))
        follow_up = slack.user_message("CSUP", "thanks!", user="UCUST", thread_ts=question["ts"])
        await slack.deliver_socket(follow_up)
        await asyncio.sleep(0.5)
        assert len(llm_server.requests) == 1  # quiet while the agent has the thread
        resume = slack.user_message(
            "CSUP", "resume", user="UAGENT", thread_ts=question["ts"], mention=True
        )
        await slack.deliver_socket(resume)
        await slack.wait_for(
            lambda: any("back" in m.rendered for m in slack.bot_messages("CSUP")), timeout=5
        )
        again = slack.user_message("CSUP", "one more thing", user="UCUST", thread_ts=question["ts"])
        await slack.deliver_socket(again)
        await finished(slack, "chat.stopStream", count=2)
    assert len(llm_server.requests) == 2
    assert [answer_of(m) for m in slack.thread("CSUP", question["ts"]) if m.is_bot][-1] == (
        "Welcome back."
    )


async def test_own_messages_bots_and_edits_are_ignored(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    rules = '[[channels]]\nplatform = "slack"\nid = "CSUP"\nmode = "auto"\n'
    async with make_bot(rules, slack_app_token="xapp-test") as running, socket_mode(running, slack):
        ours = slack.user_message("CSUP", "from us", user="UBOT")
        other_bot = slack.user_message("CSUP", "beep", user="UOTHER")
        other_bot["bot_id"] = "BOTHER"
        edit = slack.user_message("CSUP", "edited", user="UCUST")
        edit["subtype"] = "message_changed"
        for event in (ours, other_bot, edit):
            await slack.deliver_socket(event)
        await asyncio.sleep(0.3)
    assert llm_server.requests == []
    assert slack.bot_messages("CSUP") == []


@pytest.mark.parametrize("native", [True, False])
async def test_model_mentions_never_ping(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot, native: bool
) -> None:
    slack.native_streaming = native
    llm_server.enqueue(stream(["Hey <!chan", "nel> and <!here> and <@U999> @everyone"]))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        event = slack.user_message("C1", "ping them", mention=True)
        await slack.deliver_socket(event)
        await slack.wait_for(
            lambda: any(feedback_shown(m) for m in slack.bot_messages("C1")), timeout=10
        )
    # Every field of every call (text, markdown_text, blocks…), not only the blocks.
    assert_slack(
        slack,
        "C1",
        {event["ts"]: Expected("Hey <!channel> and <!here> and <@U999> @everyone")},
    )


def scale_limits(slack: FakeSlack, running: RunningBot, seconds: float) -> None:
    """Slack's per-minute tiers and our budgets for them, both squeezed into
    ``seconds``, so a test sees a minute's worth of limits in a few seconds."""
    tiers = {
        "chat.startStream": 20,
        "chat.appendStream": 100,
        "chat.stopStream": 20,
        "chat.update": 50,
    }
    budget = running.state.shared_budget
    for method, count in tiers.items():
        slack.limits[method] = FakeLimit(count, seconds)
        default = DEFAULT_LIMITS[f"slack:*:{method}"]
        budget.limits.set(f"slack:*:{method}", Limit(default.count, seconds, burst=default.burst))


@pytest.mark.parametrize("native", [True, False])
async def test_twenty_concurrent_mentions_never_see_a_429(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot, native: bool
) -> None:
    slack.native_streaming = native
    answers = [[f"Reply {i}:"] + [f" token{j}" for j in range(25)] for i in range(20)]
    for pieces in answers:
        llm_server.enqueue(stream(pieces, delay=0.04))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        scale_limits(slack, running, seconds=6.0)
        channels = [f"C{i % 4}" for i in range(20)]
        events = [
            slack.user_message(ch, f"question {i}", mention=True) for i, ch in enumerate(channels)
        ]
        await asyncio.gather(*(slack.deliver_socket(event) for event in events))

        def all_done() -> bool:
            texts = {answer_of(m) for m in slack.bot_messages()}
            return all("".join(p) in texts for p in answers)

        await slack.wait_for(all_done, timeout=60)
    assert sum(slack.rate_limited.values()) == 0
    assert len(slack.bot_messages()) == 20


async def test_long_reply_continues_in_new_thread_messages(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    paragraph = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20 + "\n\n"
    pieces = [paragraph[i : i + 200] for i in range(0, len(paragraph), 200)] * 25  # ~29 KB
    llm_server.enqueue(stream(pieces, delay=0.0))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        event = slack.user_message("C1", "write a lot", mention=True)
        await slack.deliver_socket(event)
        await slack.wait_for(
            lambda: any(feedback_shown(m) for m in slack.bot_messages("C1")), timeout=30
        )
    replies = slack.bot_messages("C1")
    assert len(replies) >= 3
    assert all(m.thread_ts == event["ts"] for m in replies)
    # every message of the reply was stopped, not left for Slack to expire
    assert not any(m.streaming for m in replies)
    stopped = {c.params["ts"] for c in slack.calls_to("chat.stopStream", ok=True)}
    assert stopped == {m.ts for m in replies}
    assert "".join(answer_of(m) for m in replies) == "".join(pieces)
    assert all(len(answer_of(m)) <= 12_000 for m in replies)


async def test_direct_message_gets_a_reply_in_the_dm(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        event = slack.user_message("D1", "hello bot", user="U1")
        await slack.deliver_socket(event)
        await slack.wait_for(
            lambda: any(answer_of(m) == ANSWER for m in slack.bot_messages("D1")), 10
        )
    [reply] = slack.bot_messages("D1")
    assert reply.thread_ts == event["ts"]  # a top-level DM starts its own thread
    sent = llm_server.requests[0].json
    assert sent is not None and sent["messages"][-1]["content"] == "hello bot"


async def test_assistant_thread_shows_status_and_prompts(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        thread = slack.next_ts()
        started = assistant_thread_started("U1", "D1", thread)
        await slack.deliver_socket(started)
        await slack.wait_calls("assistant.threads.setSuggestedPrompts", timeout=5)
        await slack.deliver_socket(slack.user_message("D1", "help me", thread_ts=thread))
        await slack.wait_calls("chat.stopStream", timeout=10)
    status = slack.calls_to("assistant.threads.setStatus")
    assert status and status[0].params["status"] == "is thinking…"
    assert [c.params["title"] for c in slack.calls_to("assistant.threads.setTitle")] == ["help me"]
    [reply] = slack.bot_messages("D1")
    assert reply.thread_ts == thread and answer_of(reply) == ANSWER


async def test_thread_memory_lost_is_rebuilt_from_slack_once(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        root = slack.user_message("C1", "first question from before", user="U1")
        slack.add_message(
            "C1", "an earlier answer", user="UBOT", thread_ts=root["ts"], bot_id="BBOT"
        )
        later = slack.user_message(
            "C1", "and a follow-up", user="U1", thread_ts=root["ts"], mention=True
        )
        await slack.deliver_socket(later)
        await slack.wait_calls("chat.stopStream", timeout=10)
    sent = llm_server.requests[0].json
    assert sent is not None
    contents = [m["content"] for m in sent["messages"]]
    assert contents[-3:] == ["first question from before", "an earlier answer", "and a follow-up"]
    assert len(slack.calls_to("conversations.replies")) == 1


async def test_native_stream_rolls_over_before_slack_closes_it(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    slack.stream_ttl = 1.2  # Slack's ~300 s, squeezed
    pieces = [f"part{i} " for i in range(40)]
    llm_server.enqueue(stream(pieces, delay=0.06))  # ~2.4 s of streaming
    async with (
        make_bot(slack_app_token="xapp-test", slack_stream_rollover=0.8) as running,
        socket_mode(running, slack),
    ):
        event = slack.user_message("C1", "go on", mention=True)
        await slack.deliver_socket(event)
        await slack.wait_for(
            lambda: any(feedback_shown(m) for m in slack.bot_messages("C1")), timeout=15
        )
    replies = slack.bot_messages("C1")
    assert len(replies) >= 2  # continued in a fresh stream
    assert all(m.stream_end != "expired" for m in replies)
    assert "".join(answer_of(m) for m in replies) == "".join(pieces)
    assert not slack.calls_to("chat.appendStream", ok=False)


async def test_a_stream_slack_closed_early_is_recovered_with_chat_update(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    slack.stream_ttl = 0.5  # Slack closes it well before our roll-over
    pieces = [f"part{i} " for i in range(30)]
    llm_server.enqueue(stream(pieces, delay=0.05))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        await slack.deliver_socket(slack.user_message("C1", "go on", mention=True))
        await slack.wait_for(
            lambda: any(feedback_shown(m) for m in slack.bot_messages("C1")), timeout=15
        )
    [reply] = slack.bot_messages("C1")
    assert slack.calls_to("chat.appendStream", ok=False)  # Slack said it was closed
    assert slack.calls_to("chat.update", ok=True)  # and we rewrote the message
    assert answer_of(reply) == "".join(pieces)
    assert not reply.streaming


async def test_user_pressing_slacks_own_stop_stops_the_reply(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    llm_server.enqueue(stream(["word "] * 200, delay=0.05))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        await slack.deliver_socket(slack.user_message("C1", "talk", mention=True))
        await slack.wait_for(lambda: slack.calls_to("chat.appendStream", ok=True), timeout=10)
        [reply] = slack.bot_messages("C1")
        slack.user_stops_stream(reply.ts)
        await llm_server.wait_disconnect(timeout=5)
        await slack.wait_for(lambda: "Stopped" in slack.rendered("C1", reply.ts), timeout=5)
    assert len(slack.calls_to("chat.appendStream", ok=False)) == 1  # no writes after the stop
    [reply] = slack.bot_messages("C1")
    text = answer_of(reply)
    assert text and ("word " * 200).startswith(text) and len(text) < len("word " * 200)
    assert not reply.streaming
    assert [b.get("block_id") for b in reply.blocks or []] == [None, None]  # markdown + note
    assert slack.rendered("C1", reply.ts).endswith("⏹️ Stopped.")


async def test_socket_mode_redelivery_gives_one_reply(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        event = slack.user_message("C1", "once", mention=True)
        await slack.deliver_socket(event, event_id="EvSame")
        await slack.deliver_socket(
            event, event_id="EvSame", retry_attempt=1, retry_reason="timeout"
        )
        await slack.wait_calls("chat.stopStream", timeout=10)
        await settled(running, answered=1, deduplicated=1)
    assert len(slack.bot_messages("C1")) == 1
    assert len(llm_server.requests) == 1


async def test_orphaned_stream_is_finalised_with_its_text_and_a_note(slack: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    started = await client.chat_startStream(
        channel="C1",
        thread_ts="1700000000.000001",
        markdown_text="half an ans",
        recipient_user_id="U1",
        recipient_team_id="T1",
    )
    ts = str(started["ts"])
    record = InflightRecord(
        "r1",
        "slack",
        messages=(
            MessageRecord(
                {"team": "T1", "channel": "C1", "ts": ts, "offset": "0", "stream": "1"},
                "half an answer",
            ),
        ),
    )
    await finalise_record(client, LocalBudget(), record)
    message = slack.message("C1", ts)
    assert not message.streaming
    assert answer_of(message) == "half an answer"
    assert slack.rendered("C1", ts).endswith(f"⚠️ The reply was interrupted: {INTERRUPTED_REASON}")


async def test_an_agent_from_a_user_group_takes_over_too(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    slack.usergroups["SAGENTS"] = ["UGROUPAGENT"]
    rules = (
        '[[channels]]\nplatform = "slack"\nid = "CSUP"\nmode = "auto"\n'
        'agent_groups = ["SAGENTS"]\nhandoff_quiet_minutes = 0\n'
    )
    llm_server.enqueue(stream(["How can I help?"]))
    async with make_bot(rules, slack_app_token="xapp-test") as running, socket_mode(running, slack):
        question = slack.user_message("CSUP", "help", user="UCUST")
        await slack.deliver_socket(question)
        await finished(slack, "chat.stopStream")
        agent = slack.user_message("CSUP", "on it", user="UGROUPAGENT", thread_ts=question["ts"])
        await slack.deliver_socket(agent)
        conversation = ConversationKey("slack", "T1", "CSUP", question["ts"])
        await eventually(lambda: running.state.handoffs.is_handed_over(conversation))
    assert len(llm_server.requests) == 1
    assert slack.calls_to("usergroups.users.list")


async def test_a_mention_refused_while_draining_is_handed_over_and_answered_once(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot, state: State
) -> None:
    """Acknowledged and claimed, then refused by a draining process: Slack won't
    send it again, so the next process answers it, exactly once."""
    llm_server.enqueue(stream(PIECES))
    draining = ActiveReplies()
    draining.accepting = False
    handed = state.keys.deferred("slack", "")
    async with (
        make_bot(active=draining, slack_app_token="xapp-test") as old,
        socket_mode(old, slack),
    ):
        event = slack.user_message("C1", "hi", user="U1", mention=True)
        delivery = await slack.deliver_socket(event, event_id="EvDrain")
        assert delivery.acked
        await eventually(lambda: _truthy(state.redis.llen(handed)))
        retried = await slack.deliver_socket(event, event_id="EvDrain", retry_attempt=1)
        assert retried.acked
    assert slack.bot_messages("C1") == []
    assert await state.redis.llen(handed) == 1  # the retry was a duplicate: not handed twice
    async with make_bot():  # the next process: its pickup answers what was handed over

        def answered() -> bool:
            return [answer_of(m) for m in slack.bot_messages("C1") if not m.streaming] == [ANSWER]

        await slack.wait_for(answered, timeout=15)
    [reply] = slack.bot_messages("C1")
    assert reply.thread_ts == event["ts"]
    assert answer_of(reply) == ANSWER and not reply.streaming
    assert len(llm_server.requests) == 1
    history = await state.conversations.history(ConversationKey("slack", "T1", "C1", event["ts"]))
    assert [(t.role, t.text) for t in history] == [("user", "hi"), ("assistant", ANSWER)]


async def _truthy(value: Awaitable[object]) -> bool:
    return bool(await value)


async def test_only_the_asker_an_agent_or_an_admin_may_stop_a_reply(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    slack.native_streaming = False
    slack.users["UADMIN"] = {"id": "UADMIN", "name": "boss", "is_admin": True}
    llm_server.enqueue(stream(["word "] * 200, delay=0.05))
    channels = '[[channels]]\nplatform = "slack"\nid = "C1"\nagents = ["UAGENT"]\n'
    refused = (
        "Only the person who asked, this channel's agents or a workspace admin can stop this reply."
    )
    async with (
        make_bot(channels, slack_app_token="xapp-test") as running,
        socket_mode(running, slack),
    ):
        await slack.deliver_socket(slack.user_message("C1", "talk", user="U1", mention=True))
        await slack.wait_for(lambda: slack.calls_to("chat.update", ok=True), timeout=10)
        [reply] = slack.bot_messages("C1")

        def stop_value() -> str | None:
            blocks = slack.message("C1", reply.ts).blocks or []
            button = next((b for b in blocks if b.get("block_id") == "chatrelay_controls"), None)
            return str(button["elements"][0]["value"]) if button else None

        value = stop_value()
        assert value is not None and value.endswith(":U1")
        await slack.deliver_interaction(
            slack.block_actions("C1", reply.ts, "chatrelay_stop", user="U2", value=value)
        )
        await slack.wait_for(lambda: slack.ephemerals, timeout=5)
        assert [(e["user"], e["text"]) for e in slack.ephemerals] == [("U2", refused)]
        assert stop_value() == value  # still writing
        # An agent of the channel passes the check (a reply that is already gone).
        await slack.deliver_interaction(
            slack.block_actions("C1", reply.ts, "chatrelay_stop", user="UAGENT", value="x:U9")
        )
        # A workspace admin stops it.
        await slack.deliver_interaction(
            slack.block_actions("C1", reply.ts, "chatrelay_stop", user="UADMIN", value=value)
        )
        await slack.wait_for(lambda: "Stopped" in slack.rendered("C1", reply.ts), timeout=5)
    assert len(slack.ephemerals) == 1
