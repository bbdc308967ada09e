"""The fake Slack behaves like Slack where chatrelay's Slack adapter will rely on it.

Every later Slack test trusts this fake: if it accepted a stream without recipients,
never answered 429, or acked envelopes the SDK never sent, those tests would pass for
the wrong reason. So each rule is checked from the outside with the REAL clients —
slack_sdk's AsyncWebClient, its aiohttp SocketModeClient, its SignatureVerifier and
Bolt's AsyncApp — never by poking the fake's internals alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.say.async_say import AsyncSay
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import (
    FakeSlack,
    Limit,
    app_mention,
    assistant_thread_started,
    blocks_text,
)

pytestmark = pytest.mark.timeout(10)

CHANNEL = "C1"
DM = "D1"
SECRET = "shh-signing-secret"


class ManualClock:
    """A clock the test moves by hand, so expiries need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=slack.api_url)


async def slack_error(call: Awaitable[Any]) -> SlackApiError:
    """The SlackApiError the real client raises for a failed call."""
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


def error_of(exc: SlackApiError) -> str:
    return str(exc.response["error"])


# --------------------------------------------------------------------------- Web API basics


async def test_post_then_update_is_stored_with_history(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    """The adapter's post+edit fallback depends on ts, stored text and edit history."""
    first = await client.chat_postMessage(channel=CHANNEL, text="Hel", thread_ts="1.000100")
    second = await client.chat_postMessage(channel=CHANNEL, text="other")
    ts = first["ts"]
    assert ts == "1700000000.000100"
    assert float(second["ts"]) > float(ts)
    assert first["message"]["bot_id"] == "BBOT"
    assert first["message"]["user"] == "UBOT"

    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "Hello *world*"}}]
    updated = await client.chat_update(channel=CHANNEL, ts=ts, text="Hello world", blocks=blocks)
    assert updated["ts"] == ts

    record = slack.message(CHANNEL, ts)
    assert record.thread_ts == "1.000100"
    assert [r.method for r in record.history] == ["chat.postMessage", "chat.update"]
    assert record.history[0].text == "Hel"
    assert slack.rendered(CHANNEL, ts) == "Hello *world*", "blocks win over the fallback text"
    update_call = slack.calls_to("chat.update")[0]
    assert update_call.content_type == "application/json"
    assert update_call.params["blocks"] == blocks
    assert update_call.status == 200 and update_call.ok

    missing = await slack_error(client.chat_update(channel=CHANNEL, ts="9.000000", text="x"))
    assert error_of(missing) == "message_not_found"

    user_msg = slack.add_message(CHANNEL, "mine", user="U1")
    foreign = await slack_error(client.chat_update(channel=CHANNEL, ts=user_msg.ts, text="x"))
    assert error_of(foreign) == "cant_update_message"
    await client.reactions_add(channel=CHANNEL, timestamp=user_msg.ts, name="eyes")
    again = await slack_error(
        client.reactions_add(channel=CHANNEL, timestamp=user_msg.ts, name="eyes")
    )
    assert error_of(again) == "already_reacted"
    assert slack.message(CHANNEL, user_msg.ts).reactions == ["eyes"]

    await client.chat_delete(channel=CHANNEL, ts=second["ts"])
    assert slack.rendered(CHANNEL, second["ts"]) == ""
    assert [m.ts for m in slack.bot_messages(CHANNEL)] == [ts]


async def test_tokens_are_checked(slack: FakeSlack) -> None:
    """A misconfigured token must fail the way Slack fails, not silently work."""
    bad = AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url)
    assert error_of(await slack_error(bad.auth_test())) == "invalid_auth"
    anonymous = AsyncWebClient(base_url=slack.api_url)
    assert error_of(await slack_error(anonymous.auth_test())) == "not_authed"
    app_token = AsyncWebClient(token="xapp-test", base_url=slack.api_url)
    denied = await slack_error(app_token.chat_postMessage(channel=CHANNEL, text="x"))
    assert error_of(denied) == "not_allowed_token_type"
    good = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    auth = await good.auth_test()
    assert (auth["team_id"], auth["user_id"], auth["bot_id"]) == ("T1", "UBOT", "BBOT")
    unknown = await slack_error(good.api_call("chat.fly"))
    assert error_of(unknown) == "unknown_method"
    assert slack.messages == {}


async def test_text_and_block_limits(slack: FakeSlack, client: AsyncWebClient) -> None:
    """Length caps break streams more often than rate limits: each must bite at Slack's
    number, and not one character earlier."""
    ok = await client.chat_postMessage(channel=CHANNEL, text="x" * 4000)
    ts = ok["ts"]
    too_long = await slack_error(client.chat_update(channel=CHANNEL, ts=ts, text="x" * 4001))
    assert error_of(too_long) == "msg_too_long"

    def section(n: int) -> dict[str, Any]:
        return {"type": "section", "text": {"type": "mrkdwn", "text": "s" * n}}

    await client.chat_update(channel=CHANNEL, ts=ts, text="t", blocks=[section(3000)])
    cases: list[list[dict[str, Any]]] = [
        [section(3001)],
        [section(1)] * 51,
        [{"type": "markdown", "text": "m" * 6000}, {"type": "markdown", "text": "m" * 6001}],
    ]
    for blocks in cases:
        exc = await slack_error(client.chat_update(channel=CHANNEL, ts=ts, text="t", blocks=blocks))
        assert error_of(exc) == "invalid_blocks"
        assert exc.response["errors"], "Slack explains which block failed"
    fine = [{"type": "markdown", "text": "m" * 6000}] * 2
    await client.chat_update(channel=CHANNEL, ts=ts, text="t", blocks=fine)
    assert slack.rendered(CHANNEL, ts) == "m" * 6000 + "\n" + "m" * 6000


# --------------------------------------------------------------------------- native streaming


async def test_stream_lifecycle_in_a_channel(slack: FakeSlack, client: AsyncWebClient) -> None:
    """Outside DMs a stream needs its recipient; while it streams chat.update is refused;
    once stopped the message is a normal one again."""
    parent = slack.add_message(CHANNEL, "question", user="U1")
    no_user = await slack_error(client.chat_startStream(channel=CHANNEL, thread_ts=parent.ts))
    assert error_of(no_user) == "missing_recipient_user_id"
    no_team = await slack_error(
        client.chat_startStream(channel=CHANNEL, thread_ts=parent.ts, recipient_user_id="U1")
    )
    assert error_of(no_team) == "missing_recipient_team_id"

    started = await client.chat_startStream(
        channel=CHANNEL,
        thread_ts=parent.ts,
        recipient_user_id="U1",
        recipient_team_id="T1",
        markdown_text="Hel",
    )
    ts = started["ts"]
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="lo")
    assert slack.message(CHANNEL, ts).streaming
    conflict = await slack_error(client.chat_update(channel=CHANNEL, ts=ts, text="x"))
    assert error_of(conflict) == "streaming_state_conflict"

    too_big = await slack_error(
        client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="y" * 12_001)
    )
    assert error_of(too_big) == "msg_too_long"

    feedback = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "done"}]}]
    stopped = await client.chat_stopStream(
        channel=CHANNEL, ts=ts, markdown_text=" world", blocks=feedback
    )
    assert stopped["message"]["text"] == "Hello world"
    assert slack.rendered(CHANNEL, ts) == "Hello world\ndone"
    assert not slack.message(CHANNEL, ts).streaming
    after = await slack_error(client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="!"))
    assert error_of(after) == "message_not_in_streaming_state"

    # chat.update keeps blocks it isn't given (Slack documents this), and blocks win
    # over text: a recovery edit that sends only text shows nothing but the old blocks.
    await client.chat_update(channel=CHANNEL, ts=ts, text="Edited")
    assert slack.rendered(CHANNEL, ts) == "done"
    await client.chat_update(channel=CHANNEL, ts=ts, text="Edited", blocks=[])
    assert slack.rendered(CHANNEL, ts) == "Edited"
    methods = [r.method for r in slack.message(CHANNEL, ts).history]
    assert methods == [
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
        "chat.update",
        "chat.update",
    ]


async def test_sdk_chat_stream_helper_in_a_dm(slack: FakeSlack, client: AsyncWebClient) -> None:
    """slack_sdk's own chat_stream() sends ``chunks`` rather than markdown_text, and DMs
    need no recipient: both must work or the SDK helper can't be used as a reference."""
    parent = slack.add_message(DM, "hi", user="U1")
    streamer = await client.chat_stream(channel=DM, thread_ts=parent.ts, buffer_size=4)
    for piece in ["Hello", ", ", "wor", "ld"]:
        await streamer.append(markdown_text=piece)
    await streamer.stop()
    assert streamer.ts is not None
    assert slack.rendered(DM, streamer.ts) == "Hello, world"
    assert [c.method for c in slack.calls] == [
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    ]
    assert [m.ts for m in slack.thread(DM, parent.ts)] == [parent.ts, streamer.ts]


async def test_streaming_can_be_switched_off(slack: FakeSlack, client: AsyncWebClient) -> None:
    """Workspaces without native streaming answer an error the adapter must fall back on."""
    slack.native_streaming = False
    exc = await slack_error(client.chat_startStream(channel=DM, thread_ts="1.000100"))
    assert error_of(exc) == "feature_not_enabled"
    slack.streaming_error = "unknown_method"
    exc = await slack_error(client.chat_appendStream(channel=DM, ts="1.000100", markdown_text="x"))
    assert error_of(exc) == "unknown_method"
    assert slack.messages == {}
    await client.chat_postMessage(channel=DM, text="fallback still works")


async def test_user_pressing_stop(slack: FakeSlack, client: AsyncWebClient) -> None:
    """Slack's own stop button reaches the bot only as an error on its next append."""
    started = await client.chat_startStream(channel=DM, thread_ts="1.000100", markdown_text="a")
    slack.user_stops_stream(started["ts"])
    exc = await slack_error(
        client.chat_appendStream(channel=DM, ts=started["ts"], markdown_text="b")
    )
    assert error_of(exc) == "stopped_by_user"
    assert slack.rendered(DM, started["ts"]) == "a"
    assert slack.message(DM, started["ts"]).stream_end == "user"


async def test_stream_expires_after_ttl() -> None:
    """Slack closes streams ~5 minutes after they start; the bot must notice and recover
    with chat.update. A hand-moved clock makes that instant and exact."""
    clock = ManualClock()
    async with FakeSlack(stream_ttl=300, clock=clock) as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        started = await client.chat_startStream(channel=DM, thread_ts="1.000100")
        ts = started["ts"]
        clock.advance(300)
        await client.chat_appendStream(channel=DM, ts=ts, markdown_text="still open")
        clock.advance(0.5)
        exc = await slack_error(client.chat_appendStream(channel=DM, ts=ts, markdown_text="x"))
        assert error_of(exc) == "message_not_in_streaming_state"
        assert slack.message(DM, ts).stream_end == "expired"
        await client.chat_update(channel=DM, ts=ts, text="still open, recovered")
        assert slack.rendered(DM, ts) == "still open, recovered"


# --------------------------------------------------------------------------- rate limits


async def test_tier_limit_answers_429_with_retry_after() -> None:
    """A scaled-down Tier: the 4th chat.update in a 10 s window is refused the way Slack
    refuses it, and a slot frees exactly when the oldest call leaves the window."""
    clock = ManualClock()
    async with FakeSlack(clock=clock, limits={"chat.update": Limit(3, 10.0)}) as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        ts = (await client.chat_postMessage(channel=CHANNEL, text="a"))["ts"]
        for i in range(3):
            await client.chat_update(channel=CHANNEL, ts=ts, text=f"edit {i}")
            clock.advance(1.0)
        exc = await slack_error(client.chat_update(channel=CHANNEL, ts=ts, text="too soon"))
        assert exc.response.status_code == 429
        assert exc.response["error"] == "ratelimited"
        assert exc.response.headers["Retry-After"] == "7"
        assert slack.rate_limited["chat.update"] == 1
        assert slack.rendered(CHANNEL, ts) == "edit 2"
        clock.advance(6.9)
        exc = await slack_error(client.chat_update(channel=CHANNEL, ts=ts, text="still soon"))
        assert exc.response.headers["Retry-After"] == "1", "rounded up, never 0"
        clock.advance(0.1)
        await client.chat_update(channel=CHANNEL, ts=ts, text="now")
        assert slack.rendered(CHANNEL, ts) == "now"


async def test_post_message_is_limited_per_channel(slack: FakeSlack) -> None:
    """chat.postMessage's special limit is per channel: a busy channel must not block
    another one (the default allows a burst of 3, then 1 per second)."""
    client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    for n in range(3):
        await client.chat_postMessage(channel=CHANNEL, text=str(n))
    exc = await slack_error(client.chat_postMessage(channel=CHANNEL, text="3"))
    assert exc.response.status_code == 429
    await client.chat_postMessage(channel="C2", text="other channel")
    assert slack.rate_limited["chat.postMessage"] == 1
    assert len(slack.bot_messages(CHANNEL)) == 3


async def test_sdk_retry_handler_honours_retry_after() -> None:
    """The Retry-After header must be in the form slack_sdk's handler parses (an integer),
    or every adapter relying on it would crash instead of waiting."""
    async with FakeSlack(limits={"auth.test": Limit(1, 1.0)}) as slack:
        client = AsyncWebClient(
            token="xoxb-test",
            base_url=slack.api_url,
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
        )
        await client.auth_test()
        second = await client.auth_test()
        assert second["ok"]
        statuses = [c.status for c in slack.calls_to("auth.test")]
        assert statuses[:2] == [200, 429] and statuses[-1] == 200


async def test_injected_failure(slack: FakeSlack, client: AsyncWebClient) -> None:
    """Outages and odd errors must be scriptable so error paths are testable."""
    slack.fail("chat.postMessage", "fatal_error", status=500)
    exc = await slack_error(client.chat_postMessage(channel=CHANNEL, text="x"))
    assert exc.response.status_code == 500 and error_of(exc) == "fatal_error"
    await client.chat_postMessage(channel=CHANNEL, text="x")
    assert len(slack.bot_messages()) == 1
    assert [c.injected for c in slack.calls_to("chat.postMessage")] == ["500", None]


# --------------------------------------------------------------------------- fault schedule


async def test_injected_429_is_slacks_and_changes_nothing(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    """An injected 429 must look like Slack's own (slack_sdk reads Retry-After from it),
    leave the message as it was, and be told apart from the fake's natural 429s."""
    ts = (await client.chat_postMessage(channel=CHANNEL, text="before"))["ts"]
    slack.faults.add("chat.update", "429", retry_after=3)
    exc = await slack_error(client.chat_update(channel=CHANNEL, ts=ts, text="after"))
    assert exc.response.status_code == 429
    assert exc.response.headers["Retry-After"] == "3"
    assert exc.response.data == {"ok": False, "error": "ratelimited"}
    assert slack.rendered(CHANNEL, ts) == "before"
    assert [r.method for r in slack.message(CHANNEL, ts).history] == ["chat.postMessage"]
    [call] = slack.calls_to("chat.update")
    assert (call.ordinal, call.injected, call.status) == (1, "429", 429)
    assert slack.natural_429s() == 0
    assert slack.faults.count(kind="429") == 1
    assert slack.injected_calls("429") == [call]

    await client.chat_update(channel=CHANNEL, ts=ts, text="after")  # the rule is spent
    assert slack.rendered(CHANNEL, ts) == "after"


async def test_natural_and_injected_429s_are_counted_apart() -> None:
    async with FakeSlack(limits={"chat.update": Limit(1, 60.0)}) as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        ts = (await client.chat_postMessage(channel=CHANNEL, text="a"))["ts"]
        await client.chat_update(channel=CHANNEL, ts=ts, text="b")
        await slack_error(client.chat_update(channel=CHANNEL, ts=ts, text="c"))  # the limit
        slack.faults.add("chat.update", "429")
        await slack_error(client.chat_update(channel=CHANNEL, ts=ts, text="d"))  # injected
        assert [c.injected for c in slack.calls_to("chat.update")] == [None, None, "429"]
        assert slack.natural_429s() == 1 == slack.natural_429s("chat.update")
        assert slack.faults.count("chat.update", "429") == 1
        assert slack.rate_limited["chat.update"] == 2  # every 429 answered, as before
        assert slack.rendered(CHANNEL, ts) == "b"


async def test_500_and_internal_error_answer_as_slack_and_apply_nothing(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    ts = (await client.chat_startStream(channel=DM, thread_ts="1.0", markdown_text="Hello"))["ts"]
    slack.faults.add("chat.appendStream", "500")
    slack.faults.add("chat.appendStream", "internal_error")
    exc = await slack_error(client.chat_appendStream(channel=DM, ts=ts, markdown_text=" one"))
    assert exc.response.status_code == 500 and error_of(exc) == "fatal_error"
    exc = await slack_error(client.chat_appendStream(channel=DM, ts=ts, markdown_text=" two"))
    assert exc.response.status_code == 200 and error_of(exc) == "internal_error"
    assert slack.rendered(DM, ts) == "Hello"
    await client.chat_appendStream(channel=DM, ts=ts, markdown_text=" three")
    assert slack.rendered(DM, ts) == "Hello three"
    assert [c.injected for c in slack.calls_to("chat.appendStream")] == [
        "500",
        "internal_error",
        None,
    ]


async def test_ordinal_range_faults_the_named_calls(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    """``at=2, count=2``: the 2nd and 3rd appends fail, whatever came before."""
    slack.faults.add("chat.appendStream", "500", at=2, count=2)
    ts = (await client.chat_startStream(channel=DM, thread_ts="1.0"))["ts"]
    for n in range(1, 5):
        call = client.chat_appendStream(channel=DM, ts=ts, markdown_text=f"[{n}]")
        if n in (2, 3):
            await slack_error(call)
        else:
            await call
    assert slack.rendered(DM, ts) == "[1][4]"
    calls = slack.calls_to("chat.appendStream")
    assert [(c.ordinal, c.injected) for c in calls] == [
        (1, None),
        (2, "500"),
        (3, "500"),
        (4, None),
    ]


async def test_dropped_call_gets_no_answer_and_is_not_applied(slack: FakeSlack) -> None:
    """A dropped connection: slack_sdk's default handler retries connection errors once,
    which is safe here only because the dropped call was not applied."""
    bare = AsyncWebClient(token="xoxb-test", base_url=slack.api_url, retry_handlers=[])
    slack.faults.add("chat.postMessage", "drop")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await bare.chat_postMessage(channel=CHANNEL, text="lost")
    assert slack.bot_messages() == []
    [dropped] = slack.calls_to("chat.postMessage")
    assert (dropped.injected, dropped.status, dropped.response) == ("drop", 0, {})

    retrying = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
    slack.faults.add("chat.postMessage", "drop")
    await retrying.chat_postMessage(channel=CHANNEL, text="once")
    assert [m.text for m in slack.bot_messages()] == ["once"]
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [0, 0, 200]


async def test_slow_call_is_applied_even_when_the_client_gave_up(slack: FakeSlack) -> None:
    """``slow`` answers late but normally: a client that timed out can't know the call
    went through (the case that makes blind retries post twice)."""
    impatient = AsyncWebClient(
        token="xoxb-test", base_url=slack.api_url, timeout=0.1, retry_handlers=[]
    )
    slack.faults.add("chat.postMessage", "slow", delay=0.5)
    with pytest.raises(TimeoutError):
        await impatient.chat_postMessage(channel=CHANNEL, text="late")
    call = await slack.wait_calls("chat.postMessage", timeout=2)
    assert (call.injected, call.status, call.ok) == ("slow", 200, True)
    assert [m.text for m in slack.bot_messages()] == ["late"]


async def test_seeded_schedule_gives_the_same_faults_for_the_same_seed() -> None:
    async def faults_seen(seed: int) -> list[tuple[int, str | None, int, str | None]]:
        async with FakeSlack(rate_limits=False) as slack:
            client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url, retry_handlers=[])
            slack.faults.schedule(
                seed, ["chat.postMessage"], p_429=0.2, p_500=0.2, p_internal_error=0.2
            )
            for n in range(30):
                with contextlib.suppress(SlackApiError):
                    await client.chat_postMessage(channel=CHANNEL, text=str(n))
            calls = slack.calls_to("chat.postMessage")
            posted = [m.text for m in slack.bot_messages()]
            assert posted == [c.params["text"] for c in calls if c.injected is None]
            assert slack.faults.planned("chat.postMessage", 30) == [c.injected for c in calls]
            return [(c.ordinal, c.injected, c.status, c.error) for c in calls]

    first = await faults_seen(11)
    assert first == await faults_seen(11)
    assert first != await faults_seen(12)
    assert {kind for _, kind, _, _ in first} == {None, "429", "500", "internal_error"}


# --------------------------------------------------------------------------- reading back


async def test_conversations_replies_pages_through_a_thread() -> None:
    """Thread history rebuilt from Slack must come back in order, with the parent first,
    and pagination must work under the 15-per-page cap some apps get."""
    async with FakeSlack(replies_page_limit=2) as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        parent = slack.add_message(CHANNEL, "question", user="U1")
        reply = await client.chat_postMessage(channel=CHANNEL, text="answer", thread_ts=parent.ts)
        slack.add_message(CHANNEL, "follow-up", user="U2", thread_ts=parent.ts)
        slack.add_message(CHANNEL, "elsewhere", user="U2")

        first = await client.conversations_replies(channel=CHANNEL, ts=parent.ts, limit=10)
        assert [m["text"] for m in first["messages"]] == ["question", "answer"]
        head = first["messages"][0]
        assert head["reply_count"] == 2 and head["thread_ts"] == parent.ts
        assert first["messages"][1]["bot_id"] == "BBOT"
        assert first["messages"][1]["ts"] == reply["ts"]
        assert first["has_more"]
        cursor = first["response_metadata"]["next_cursor"]
        rest = await client.conversations_replies(channel=CHANNEL, ts=parent.ts, cursor=cursor)
        assert [m["text"] for m in rest["messages"]] == ["follow-up"]
        assert not rest["has_more"]
        missing = await slack_error(client.conversations_replies(channel=CHANNEL, ts="5.000000"))
        assert error_of(missing) == "thread_not_found"


async def test_assistant_thread_methods(slack: FakeSlack, client: AsyncWebClient) -> None:
    """Status, prompts and titles are visible state; a reply clears the status as Slack
    does, so a bot can't rely on clearing it itself."""
    thread = "1700000000.000001"
    await client.assistant_threads_setStatus(
        channel_id=DM, thread_ts=thread, status="is thinking…", loading_messages=["a", "b"]
    )
    assert slack.status(DM, thread) == "is thinking…"
    too_many = await slack_error(
        client.assistant_threads_setStatus(
            channel_id=DM, thread_ts=thread, status="x", loading_messages=["m"] * 11
        )
    )
    assert error_of(too_many) == "invalid_arguments"
    await client.assistant_threads_setSuggestedPrompts(
        channel_id=DM, thread_ts=thread, prompts=[{"title": "Hi", "message": "Say hi"}]
    )
    await client.assistant_threads_setTitle(channel_id=DM, thread_ts=thread, title="Greeting")
    await client.chat_postMessage(channel=DM, thread_ts=thread, text="hello")
    assert slack.status(DM, thread) == ""
    assert slack.titles[(DM, thread)] == ["Greeting"]
    assert slack.suggested_prompts[(DM, thread)][0]["prompts"][0]["title"] == "Hi"


def test_blocks_text_reads_what_users_see() -> None:
    """rendered() is what assertions compare; controls must not leak into it."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Title"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "Body"}},
        {"type": "actions", "elements": [{"type": "button", "text": {"text": "Stop"}}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "_note_"}]},
    ]
    assert blocks_text(blocks) == "Title\nBody\n_note_"


# --------------------------------------------------------------------------- Events API (HTTP)


class AppStub:
    """A stand-in for the app's HTTP endpoint: verifies signatures with slack_sdk's own
    verifier and answers as scripted."""

    def __init__(self, secret: str) -> None:
        self.verifier = SignatureVerifier(secret)
        self.requests: list[tuple[dict[str, str], bytes, bool]] = []
        self.hold_first = asyncio.Event()
        """Unset: the first request waits on it (to miss Slack's deadline)."""
        self.hold_first.set()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        valid = self.verifier.is_valid_request(body, headers)
        self.requests.append((headers, body, valid))
        if len(self.requests) == 1:
            await self.hold_first.wait()
        if not valid:
            return web.Response(status=401)
        parsed = json.loads(body)
        if parsed.get("type") == "url_verification":
            return web.json_response({"challenge": parsed["challenge"]})
        return web.Response(status=200)

    async def __aenter__(self) -> AppStub:
        app = web.Application()
        app.router.add_post("/slack/events", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/slack/events"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.hold_first.set()
        assert self.runner is not None
        await self.runner.cleanup()


async def test_http_delivery_is_signed_the_way_slack_signs(slack: FakeSlack) -> None:
    """An app verifying with slack_sdk's SignatureVerifier must accept the fake's requests
    and reject them under another secret, or HTTP-mode tests prove nothing."""
    async with AppStub(SECRET) as app:
        event = app_mention("U1", "<@UBOT> hi", CHANNEL, "1700000001.000100")
        status = await slack.deliver_http(app.url, event, signing_secret=SECRET, event_id="Ev1")
        assert status == 200
        headers, body, valid = app.requests[0]
        assert valid
        envelope = json.loads(body)
        assert envelope["type"] == "event_callback"
        assert envelope["event_id"] == "Ev1"
        assert envelope["event"] == event
        assert envelope["authorizations"][0]["user_id"] == "UBOT"
        assert "X-Slack-Retry-Num" not in headers

        status = await slack.deliver_http(
            app.url, event, signing_secret=SECRET, retry_num=1, retry_reason="http_timeout"
        )
        assert status == 200
        assert app.requests[1][0]["X-Slack-Retry-Num"] == "1"
        assert app.requests[1][0]["X-Slack-Retry-Reason"] == "http_timeout"

        assert await slack.deliver_http(app.url, event, signing_secret="other") == 401
        assert not app.requests[2][2]
        assert await slack.url_verification(app.url, SECRET)
        delivery = slack.deliveries[0]
        assert delivery.acked and delivery.latency is not None and delivery.latency < 3


async def test_http_delivery_retries_when_the_app_is_slow(slack: FakeSlack) -> None:
    """Slack re-sends an event nobody acked within 3 s, same event_id, with retry headers:
    this is what the app's dedupe must absorb."""
    async with AppStub(SECRET) as app:
        app.hold_first.clear()
        event = app_mention("U1", "<@UBOT> hi", CHANNEL, "1700000001.000100")
        attempts = await slack.deliver_http_with_retries(
            app.url, event, signing_secret=SECRET, ack_timeout=0.3
        )
        assert [a.error for a in attempts] == ["timeout", None]
        assert attempts[1].acked and attempts[1].attempt == 1
        retry_headers = app.requests[1][0]
        assert retry_headers["X-Slack-Retry-Num"] == "1"
        assert retry_headers["X-Slack-Retry-Reason"] == "http_timeout"
        event_ids = {json.loads(body)["event_id"] for _, body, _ in app.requests}
        assert len(event_ids) == 1


# --------------------------------------------------------------------------- Socket Mode


async def test_socket_mode_client_connects_receives_and_acks(slack: FakeSlack) -> None:
    """The real aiohttp SocketModeClient must connect through apps.connections.open, get
    envelopes in the shape it parses, and have its acks matched to them."""
    received: list[SocketModeRequest] = []

    async def listener(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    web_client = AsyncWebClient(base_url=slack.api_url)
    socket_client = SocketModeClient(app_token="xapp-test", web_client=web_client)
    socket_client.socket_mode_request_listeners.append(listener)
    try:
        await socket_client.connect()
        await slack.wait_connected(timeout=3)
        assert slack.calls_to("apps.connections.open", ok=True)

        event = slack.user_message(CHANNEL, "hi", user="U1", mention=True)
        delivery = await slack.deliver_socket(event, event_id="Ev42", timeout=3)
        assert delivery.acked and delivery.latency is not None
        assert received[0].type == "events_api"
        assert received[0].payload["event_id"] == "Ev42"
        assert received[0].payload["event"]["text"] == "<@UBOT> hi"
        assert received[0].retry_attempt == 0

        press = slack.block_actions(CHANNEL, event["ts"], "stop_reply", value="r1")
        ack = await slack.deliver_interaction(press, timeout=3)
        assert ack.acked
        assert received[1].type == "interactive"
        assert received[1].payload["actions"][0]["action_id"] == "stop_reply"
        assert slack.stray_acks == []
    finally:
        await socket_client.close()


async def test_socket_mode_retries_unacked_envelopes(slack: FakeSlack) -> None:
    """An app that doesn't ack in time gets the same event again with retry_attempt set."""
    seen: list[SocketModeRequest] = []

    async def listener(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        seen.append(request)
        if request.retry_attempt:
            await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    socket_client = SocketModeClient(
        app_token="xapp-test", web_client=AsyncWebClient(base_url=slack.api_url)
    )
    socket_client.socket_mode_request_listeners.append(listener)
    try:
        await socket_client.connect()
        await slack.wait_connected(timeout=3)
        event = assistant_thread_started("U1", DM, "1700000000.000100")
        with pytest.raises(TimeoutError):
            await slack.deliver_socket(event, timeout=0.2)
        attempts = await slack.deliver_socket_with_retries(event, ack_timeout=0.5, event_id="Ev7")
        assert [a.acked for a in attempts] == [False, True]
        assert [r.retry_attempt for r in seen[1:]] == [0, 1]
        assert seen[2].retry_reason == "timeout"
        assert {r.payload["event_id"] for r in seen[1:]} == {"Ev7"}
    finally:
        await socket_client.close()


async def test_socket_deliveries_round_robin_over_connections(slack: FakeSlack) -> None:
    """Slack spreads envelopes over an app's connections (up to 10): a multi-connection
    deployment is only tested if the fake does too."""
    clients: list[SocketModeClient] = []

    async def ack(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    try:
        for _ in range(2):
            socket_client = SocketModeClient(
                app_token="xapp-test", web_client=AsyncWebClient(base_url=slack.api_url)
            )
            socket_client.socket_mode_request_listeners.append(ack)
            clients.append(socket_client)
            await socket_client.connect()
        await slack.wait_connected(count=2, timeout=3)
        used = []
        for n in range(4):
            event = app_mention("U1", "hi", CHANNEL, f"1700000001.00010{n}")
            used.append((await slack.deliver_socket(event, timeout=3)).connection_id)
        assert used[0] != used[1] and used[:2] == used[2:]
    finally:
        for socket_client in clients:
            await socket_client.close()


async def test_bolt_app_over_socket_mode_replies_in_thread(slack: FakeSlack) -> None:
    """End to end with Bolt: auth.test's shape, envelope parsing and say() all have to
    line up for the real adapter to run against this fake."""
    app = AsyncApp(client=AsyncWebClient(token="xoxb-test", base_url=slack.api_url))

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: AsyncSay) -> None:
        await say(text="pong", thread_ts=event["ts"])

    handler = AsyncSocketModeHandler(app, "xapp-test")
    try:
        await handler.connect_async()
        await slack.wait_connected(timeout=3)
        event = slack.user_message(CHANNEL, "ping", user="U1", mention=True)
        await slack.deliver_socket(event, timeout=3)
        await slack.wait_calls("chat.postMessage", timeout=3)
        replies = slack.thread(CHANNEL, event["ts"])
        assert [m.text for m in replies] == ["<@UBOT> ping", "pong"]
        assert replies[1].bot_id == "BBOT"
    finally:
        await handler.close_async()


async def test_agent_experience_dm_opened_and_messages_reach_bolt() -> None:
    """Agent experience (``agent_view``): opening the DM is ``app_home_opened`` with
    ``tab: "messages"``, with no thread root made; a top-level DM is a plain
    ``message.im``. Bolt 1.30 hands ``app_home_opened`` a ``set_suggested_prompts``
    without ``thread_ts``, which the fake keeps; a call WITH one is lost, as Slack's
    reference says an agent app's call "will silently fail"."""
    async with FakeSlack(experience="agent") as slack:
        app = AsyncApp(client=AsyncWebClient(token="xoxb-test", base_url=slack.api_url))
        opened: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []

        @app.event("app_home_opened")
        async def on_open(event: dict[str, Any], set_suggested_prompts: Any) -> None:
            opened.append(event)
            await set_suggested_prompts(prompts=[{"title": "Hi", "message": "Say hi"}])

        @app.event("message")
        async def on_message(event: dict[str, Any]) -> None:
            messages.append(event)

        handler = AsyncSocketModeHandler(app, "xapp-test")
        try:
            await handler.connect_async()
            await slack.wait_connected(timeout=3)
            await slack.deliver_socket(slack.user_opens_dm(DM, user="U1"), timeout=3)
            await slack.wait_calls("assistant.threads.setSuggestedPrompts", timeout=3)
            sent = slack.user_message(DM, "hello", user="U1")
            await slack.deliver_socket(sent, timeout=3)
            await slack.wait_for(lambda: messages, timeout=3)
        finally:
            await handler.close_async()
        [event] = opened
        assert event["type"] == "app_home_opened" and event["tab"] == "messages"
        assert event["user"] == "U1" and event["channel"] == DM and event["event_ts"]
        assert "view" not in event  # only a published Home tab has one
        assert "thread_ts" not in slack.calls_to("assistant.threads.setSuggestedPrompts")[0].params
        assert slack.suggested_prompts[(DM, "")][0]["prompts"][0]["title"] == "Hi"
        assert slack.messages.get(DM, {}).keys() == {sent["ts"]}  # no root made by Slack
        [dm] = messages
        assert dm["channel_type"] == "im" and "thread_ts" not in dm and "subtype" not in dm

        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        await client.assistant_threads_setSuggestedPrompts(
            channel_id=DM, thread_ts=sent["ts"], prompts=[{"title": "Lost", "message": "x"}]
        )
        assert (DM, sent["ts"]) not in slack.suggested_prompts
        assert [p["thread_ts"] for p in slack.lost_prompts] == [sent["ts"]]


async def test_assistant_experience_thread_started_makes_its_root(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    """Assistant experience (``assistant_view``, the default): Slack makes the thread's
    root (``assistant_app_thread``, from the user) and prompts take its ``thread_ts``."""
    event = slack.user_opens_assistant_thread(DM, user="U1")
    thread = event["assistant_thread"]
    assert event["type"] == "assistant_thread_started"
    assert thread["channel_id"] == DM and thread["user_id"] == "U1"
    root = slack.message(DM, thread["thread_ts"])
    assert root.subtype == "assistant_app_thread" and root.user == "U1"
    await client.assistant_threads_setSuggestedPrompts(
        channel_id=DM, thread_ts=thread["thread_ts"], prompts=[{"title": "Hi", "message": "x"}]
    )
    assert slack.suggested_prompts[(DM, thread["thread_ts"])] and not slack.lost_prompts


async def test_waits_are_bounded(slack: FakeSlack) -> None:
    """No test may hang on the fake: waits and deliveries without a client time out."""
    with pytest.raises(TimeoutError):
        await slack.wait_connected(timeout=0.1)
    with pytest.raises(TimeoutError):
        await slack.deliver_socket(app_mention("U1", "x", CHANNEL, "1.000100"), timeout=0.1)
    assert slack.deliveries[-1].error == "timeout"
