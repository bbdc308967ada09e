"""Three replicas behind Slack's round robin behave like one: budgets, dedupe and
the strategy choice are shared through Redis. The real service per replica
(Socket Mode, real slack_bolt), one fake Slack dealing envelopes out in turn."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from core.llm.client import LLMClient
from core.state.keys import Keys
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.slack_server import FakeSlack
from tests.invariants import Expected, check_slack
from tests.slack.replicas import answer, assert_answered_once_by_all, squeeze_minutes, start_replica

MENTIONS = 30
"""More than the 20 streams Slack starts a minute: replicas that each counted
their own starts would start 30 and meet 429s."""

SQUEEZED = 8.0
"""Seconds that stand for Slack's minute, for Slack's tiers and our budgets alike."""


async def test_three_replicas_each_event_retried_on_another_answer_once_exact_and_without_429s(
    slack: FakeSlack,
    llm_server: FakeLLMServer,
    llm: LLMClient,
    redis_url: str,
    keys: Keys,
    redis: Redis,  # deletes the replicas' keys afterwards
    tmp_path: Path,
) -> None:
    slack.native_streaming = True
    texts = [f"Answer {i}: " + " ".join(f"word{i}-{j}" for j in range(40)) for i in range(MENTIONS)]
    questions = {f"question {i}": text for i, text in enumerate(texts)}
    for _ in range(MENTIONS * 2):  # more than needed: a duplicate reply would find one
        llm_server.enqueue(lambda request: answer(request, questions))
    replicas = [
        await start_replica(name, slack, llm, redis_url, keys.prefix, tmp_path)
        for name in ("a", "b", "c")
    ]
    try:
        await slack.wait_connected(timeout=5, count=3)
        squeeze_minutes(slack, [r.state.shared_budget.limits for r in replicas], SQUEEZED)
        events = [
            slack.user_message("C1", f"question {i}", user=f"U{i + 1}", mention=True)
            for i in range(MENTIONS)
        ]
        # Each event twice in a row, as Slack retries one whose ack it missed: the
        # round robin hands the retry to the next replica.
        for i, event in enumerate(events):
            first = await slack.deliver_socket(event, event_id=f"Ev{i}")
            retry = await slack.deliver_socket(
                event, event_id=f"Ev{i}", retry_attempt=1, retry_reason="timeout"
            )
            assert first.connection_id != retry.connection_id
        expected = {e["ts"]: Expected(questions[f"question {i}"]) for i, e in enumerate(events)}
        await slack.wait_for(lambda: not check_slack(slack, "C1", expected), timeout=90)
    finally:
        for replica in replicas:
            await replica.stop_replies()
            await replica.stack.aclose()

    assert_answered_once_by_all(slack, llm_server, replicas, expected, MENTIONS)
