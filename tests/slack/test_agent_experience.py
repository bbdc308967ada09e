"""Direct messages in both of Slack's DM experiences, end to end: the real Bolt and
slack_sdk against the fake Slack, a fake model over HTTP and a real Redis.

- Agent experience (``agent_view``, what new apps get): opening the DM is
  ``app_home_opened`` (tab ``messages``), and every top-level DM starts a threaded
  conversation of its own.
- Assistant experience (``assistant_view``, apps installed before): an
  ``assistant_thread_started`` still gets its prompts, and the thread its answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest

from bots.slack.events import GREETING, SUGGESTED_PROMPTS
from core.service.intake import OUTCOMES, IntakeLog
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.slack_server import FakeSlack
from tests.slack.test_slack_adapter import (
    ANSWER,
    PIECES,
    StartBot,
    answer_of,
    eventually,
    socket_mode,
    stream,
)

DM = "D1"


@pytest.fixture
def experience() -> Literal["assistant", "agent"]:
    """The app's DM experience: ``agent_view`` unless a test parametrizes it."""
    return "agent"


@pytest.fixture
async def slack(experience: Literal["assistant", "agent"]) -> AsyncIterator[FakeSlack]:
    """The conftest's fake Slack, configured with ``experience``."""
    async with FakeSlack(
        team_id="T1", bot_user_id="UBOT", bot_id="BBOT", experience=experience
    ) as server:
        yield server


async def settled(log: IntakeLog, count: int) -> bool:
    """Whether ``count`` events of ``log`` have their outcome."""
    return sum(log.counts[outcome] for outcome in OUTCOMES) >= count


def conversation(llm_server: FakeLLMServer, index: int) -> list[tuple[str, str]]:
    """(role, content) of the turns the model was sent in request ``index``, system aside."""
    sent = llm_server.requests[index].json
    assert sent is not None
    messages: list[dict[str, Any]] = sent["messages"]
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]


async def test_opening_the_dm_shows_the_prompts_once(slack: FakeSlack, make_bot: StartBot) -> None:
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        opened = running.events.dms.opened
        first = slack.user_opens_dm(DM, user="U1")
        await slack.deliver_socket(first, event_id="EvOpen1")
        await slack.deliver_socket(first, event_id="EvOpen1")  # Slack's retry of it
        await slack.deliver_socket(slack.user_opens_dm(DM, user="U1"))  # a later visit
        home = slack.user_opens_dm(DM, user="U2") | {"tab": "home"}
        await slack.deliver_socket(home)  # the Home tab, not the DM
        await eventually(lambda: settled(opened, 4))
        assert opened.counts["answered"] == 1
        assert opened.counts["deduplicated"] == 1
        assert opened.counts["ignored"] == 2
        # another user opening the DM is greeted too
        await slack.deliver_socket(slack.user_opens_dm("D2", user="U3"))
        await eventually(lambda: settled(opened, 5))
    calls = slack.calls_to("assistant.threads.setSuggestedPrompts", ok=True)
    assert [c.params["channel_id"] for c in calls] == [DM, "D2"]
    assert all("thread_ts" not in c.params for c in calls)  # lost for an agent app
    [shown] = slack.suggested_prompts[(DM, "")]
    assert shown["title"] == GREETING
    assert [p["title"] for p in shown["prompts"]] == [p["title"] for p in SUGGESTED_PROMPTS]
    assert not slack.lost_prompts
    assert running.events.intake.counts["received"] == 0  # not counted as messages


async def test_each_top_level_dm_is_its_own_threaded_conversation(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    other = ["Another", " answer", "."]
    for pieces in (PIECES, other, PIECES):
        llm_server.enqueue(stream(pieces))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        await slack.deliver_socket(slack.user_opens_dm(DM, user="U1"))
        first = slack.user_message(DM, "first question", user="U1")
        await slack.deliver_socket(first)
        await slack.wait_calls("chat.stopStream", count=1, timeout=10)
        second = slack.user_message(DM, "an unrelated question", user="U1")
        await slack.deliver_socket(second)
        await slack.wait_calls("chat.stopStream", count=2, timeout=10)
        follow_up = slack.user_message(DM, "and more on the first", thread_ts=first["ts"])
        await slack.deliver_socket(follow_up)
        await slack.wait_calls("chat.stopStream", count=3, timeout=10)
        await eventually(lambda: settled(running.events.intake, 3))
        assert running.events.intake.counts["answered"] == 3

    # each reply is in the thread of the message it answers, streamed natively
    replies = slack.bot_messages(DM)
    assert [m.thread_ts for m in replies] == [first["ts"], second["ts"], first["ts"]]
    assert [answer_of(m) for m in replies] == [ANSWER, "Another answer.", ANSWER]
    assert all(m.source == "stream" for m in replies)
    # "is thinking…" under each new thread before its reply, then cleared by it
    for root in (first, second):
        assert slack.statuses[(DM, root["ts"])][0].status == "is thinking…"
        assert slack.status(DM, root["ts"]) == ""
    # each conversation gets a title once, from its first question
    assert slack.titles == {
        (DM, first["ts"]): ["first question"],
        (DM, second["ts"]): ["an unrelated question"],
    }
    # separate histories: the second question knows nothing of the first...
    assert conversation(llm_server, 0) == [("user", "first question")]
    assert conversation(llm_server, 1) == [("user", "an unrelated question")]
    # ...and the follow-up in the first thread continues only that one
    assert conversation(llm_server, 2) == [
        ("user", "first question"),
        ("assistant", ANSWER),
        ("user", "and more on the first"),
    ]
    assert sum(slack.rate_limited.values()) == 0


@pytest.mark.parametrize("experience", ["assistant"])
async def test_an_assistant_view_install_still_gets_its_assistant_threads(
    slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    llm_server.enqueue(stream(PIECES))
    llm_server.enqueue(stream(["More", "."]))
    async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
        started = slack.user_opens_assistant_thread(DM, user="U1")
        thread = started["assistant_thread"]["thread_ts"]
        await slack.deliver_socket(started)
        await eventually(lambda: settled(running.events.dms.opened, 1))
        for number, text in enumerate(["help me", "and then?"], start=1):
            await slack.deliver_socket(slack.user_message(DM, text, thread_ts=thread))
            await slack.wait_calls("chat.stopStream", count=number, timeout=10)
    [prompts] = slack.calls_to("assistant.threads.setSuggestedPrompts", ok=True)
    assert prompts.params["thread_ts"] == thread  # this experience needs it
    assert slack.suggested_prompts[(DM, thread)] and not slack.lost_prompts
    replies = slack.bot_messages(DM)
    assert [m.thread_ts for m in replies] == [thread, thread]
    assert [answer_of(m) for m in replies] == [ANSWER, "More."]
    assert slack.titles == {(DM, thread): ["help me"]}
    assert slack.statuses[(DM, thread)][0].status == "is thinking…"
    assert conversation(llm_server, 1) == [
        ("user", "help me"),
        ("assistant", ANSWER),
        ("user", "and then?"),
    ]
