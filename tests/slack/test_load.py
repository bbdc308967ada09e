"""A busy channel: many mentions at once, every one visible at once, every reply
whole, no 429. The real bot over Socket Mode against the fake Slack, with
Slack's per-minute tiers and our budgets for them squeezed into seconds."""

from __future__ import annotations

import asyncio
import time

from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.slack_server import FakeSlack
from tests.invariants import Expected, check_slack
from tests.slack.replicas import squeeze_minutes
from tests.slack.test_slack_adapter import StartBot, socket_mode, stream

FIRST_VISIBLE_BOUND = 3.0
"""Seconds from a mention to the first thing its thread shows: a second in
production, plus slack for a loaded test machine."""


def first_visible(slack: FakeSlack, channel: str, thread: str) -> float | None:
    """When the thread first showed anything of the reply: a status, a post or a stream."""
    times = [s.time for s in slack.statuses.get((channel, thread), []) if s.status]
    for call in slack.calls:
        if (
            call.method in ("chat.postMessage", "chat.startStream")
            and call.params.get("thread_ts") == thread
        ):
            times.append(call.time)
    return min(times, default=None)


async def test_twenty_mentions_in_one_channel_all_show_something_at_once(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    slack.native_streaming = True
    answers = [[f"Reply {i}:"] + [f" token{j}" for j in range(30)] for i in range(20)]
    for pieces in answers:
        llm_server.enqueue(stream(pieces, delay=0.05))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        squeeze_minutes(slack, [running.state.shared_budget.limits], seconds=8.0)
        events = [slack.user_message("C1", f"question {i}", mention=True) for i in range(20)]
        asked = time.monotonic()
        await asyncio.gather(*(slack.deliver_socket(event) for event in events))
        # Which model answer goes to which mention is the order the bot asked
        # the model in: read it from the requests instead of assuming it.
        await llm_server.wait_requests(20, timeout=10)
        expected = {
            event["ts"]: Expected("".join(answers[_request_of(llm_server, event)]))
            for event in events
        }
        await slack.wait_for(lambda: not check_slack(slack, "C1", expected), timeout=60)

    late = {
        event["ts"]: seen - asked if seen is not None else None
        for event in events
        if (seen := first_visible(slack, "C1", event["ts"])) is None
        or seen - asked > FIRST_VISIBLE_BOUND
    }
    assert not late, f"mentions that showed nothing within {FIRST_VISIBLE_BOUND} s: {late}"
    assert not check_slack(slack, "C1", expected)
    assert sum(slack.rate_limited.values()) == 0
    # Bolt asks auth.test per event until it has an answer: the client's is the
    # one from start, so a burst at a fresh process spends no more of them.
    assert len(slack.calls_to("auth.test")) == 1
    # Slack starts 20 streams a minute and our window 19: the last reply found no
    # start free and posted its first text instead of waiting for one.
    started = [c for c in slack.calls if c.method == "chat.startStream"]
    posted = [c for c in slack.calls if c.method == "chat.postMessage"]
    assert len(started) == 19
    assert len(posted) == 1
    assert len({c.params["thread_ts"] for c in started + posted}) == 20


def _request_of(llm_server: FakeLLMServer, event: dict[str, object]) -> int:
    """The index of the model request that answered ``event`` (its question text)."""
    question = str(event["text"]).split(">", 1)[-1].strip()
    for index, request in enumerate(llm_server.requests):
        messages = (request.json or {}).get("messages") or []
        if messages and question == str(messages[-1].get("content", "")).strip():
            return index
    raise AssertionError(f"no model request asked {question!r}")
