"""Many replies in one channel within Discord's limits, the Stop button, 429s
learnt by the shared budget, and replies of a dead process finished by another."""

from __future__ import annotations

import pytest

from core.clock import FakeClock
from core.reply.budget import Limit as BudgetLimit
from core.state.inflight import InflightRecord, InflightRegistry, MessageRecord
from core.state.store import State
from tests.discord.conftest import (
    StartBot,
    answer,
    bot_messages,
    eventually,
    every_write_limits_mentions,
    finished,
    state_line,
    stop_id,
    stream,
)
from tests.fakes.discord_server import ALICE, BOB, CHANNEL_ID, FakeDiscord, Limit
from tests.fakes.llm_server import FakeLLMServer


async def test_five_replies_streaming_in_one_channel_never_meet_a_429(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    answers = [[f"Reply {n} ", *(f"word{i} " for i in range(12)), "end."] for n in range(5)]
    for pieces in answers:
        llm_server.enqueue(stream(pieces, delay=0.05))
    async with start_bot() as service:
        for n in range(5):
            await fake.inject_message(CHANNEL_ID, f"question {n}", ALICE, mentions_bot=True)
        await eventually(
            lambda: len([m for m in bot_messages(fake, CHANNEL_ID) if finished(m)]) == 5,
            within=20,
        )
    shown = sorted(answer(m) for m in bot_messages(fake, CHANNEL_ID))
    assert shown == sorted("".join(pieces) for pieces in answers)
    calls = [c for c in fake.calls if c.bucket == f"channel_messages:{CHANNEL_ID}"]
    # Five sends went through (a reply whose stream ended before its first slot came
    # is sent whole, in one call), and edits of those that were still streaming.
    assert len([c for c in calls if c.method == "POST" and c.status == 200]) == 5
    assert sum(fake.rate_limited.values()) == 0
    assert service.learner.rate_limited == 0
    assert every_write_limits_mentions(fake)


async def test_a_budget_looser_than_discord_learns_from_its_answers_and_loses_nothing(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the budget's limit is wrong (here: 25 times the channel's), the headers of
    Discord's answers block the channel's scope whenever its window is spent, and any
    429 that still happens is retried by discord.py and blocks the scope too: the
    answers arrive whole."""
    fake.limits.channel_messages = Limit(2, 1.0)
    state.shared_budget.limits.set("discord:channel:*", BudgetLimit(50, 1, burst=10))
    blocked: list[tuple[str, float]] = []
    block = state.budget.block

    async def recording_block(scope: str, seconds: float) -> None:
        blocked.append((scope, seconds))
        await block(scope, seconds)

    monkeypatch.setattr(state.budget, "block", recording_block)
    for n in range(3):
        llm_server.enqueue(stream([f"Answer {n}", " is", " here."], delay=0.05))
    async with start_bot() as service:
        for n in range(3):
            await fake.inject_message(CHANNEL_ID, f"q{n}", ALICE, mentions_bot=True)
        await eventually(
            lambda: len([m for m in bot_messages(fake, CHANNEL_ID) if finished(m)]) == 3,
            within=20,
        )
    assert sorted(answer(m) for m in bot_messages(fake, CHANNEL_ID)) == [
        f"Answer {n} is here." for n in range(3)
    ]
    # The window was spent, and the budget knew. How often depends on timing: once
    # the first answers taught the budget the channel's real limit (2 per second,
    # bots.discord.limits), it paces by it and spends fewer windows.
    assert service.learner.exhausted >= 1
    channel_blocks = [
        seconds for scope, seconds in blocked if scope == f"discord:channel:{CHANNEL_ID}"
    ]
    assert len(channel_blocks) >= 1 and all(0 < s <= 1.0 for s in channel_blocks)
    assert service.learner.rate_limited == fake.rate_limited[f"channel_messages:{CHANNEL_ID}"]


async def test_the_stop_button_stops_the_reply_for_the_asker_only(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot
) -> None:
    llm_server.enqueue(stream(["word "] * 200, delay=0.05))
    async with start_bot():
        await fake.inject_message(CHANNEL_ID, "talk a lot", ALICE, mentions_bot=True)
        await eventually(lambda: [m for m in bot_messages(fake, CHANNEL_ID) if m.components])
        [reply] = bot_messages(fake, CHANNEL_ID)
        custom_id = stop_id(reply)
        refused = await fake.inject_component(custom_id, reply.id, BOB)
        await eventually(lambda: refused.acknowledged)
        assert refused.callback_data is not None and "Only" in refused.callback_data["content"]
        assert not llm_server.client_disconnects
        pressed = await fake.inject_component(custom_id, reply.id, ALICE)
        await llm_server.wait_disconnect(timeout=3)
        await eventually(lambda: finished(reply))
    assert pressed.callback_type == 6  # acknowledged without an edit of its own
    assert state_line(reply) == "-# ⏹️ Stopped by Alice"
    text = answer(reply)
    assert text and ("word " * 200).startswith(text) and len(text) < len("word " * 200)


async def test_a_dead_processes_reply_is_finished_by_the_sweeper(
    fake: FakeDiscord, llm_server: FakeLLMServer, start_bot: StartBot, state: State
) -> None:
    llm_server.enqueue(stream(["Placeholder."]))
    async with start_bot():
        await fake.inject_message(CHANNEL_ID, "hi", ALICE, mentions_bot=True)
        await eventually(lambda: [m for m in bot_messages(fake, CHANNEL_ID) if finished(m)])
        [message] = bot_messages(fake, CHANNEL_ID)
        # Another process was streaming into this message when it died: its clock
        # stands still, so it never beats again after registering.
        dead = InflightRegistry(
            state.redis, state.keys, heartbeat=0.2, timeout=0.5, clock=FakeClock()
        )
        target = {"kind": "channel", "channel": str(CHANNEL_ID), "message": str(message.id)}
        shown = MessageRecord({**target, "render": "content"}, "Half an")
        record = InflightRecord("deadbeef", "discord", messages=(shown,))
        tracking = dead.track(record)
        await tracking.__aenter__()
        try:
            await eventually(lambda: "interrupted" in message.content)
        finally:
            await tracking.__aexit__(None, None, None)  # tidy up the "dead" registry
    assert message.content.startswith("Half an\n-# ⚠️ The reply was interrupted")
    assert message.components == []
