"""Finishing a reply this process did not finish (``bots.discord.finalise``), with
the real discord.py against the fake Discord: every open message of the record
gets its text and loses its Stop button, only the last one says how the reply
ended, every edit is paid from the budget of its scope and pings nobody, a 429
blocks that scope and leaves the record for later, and what is gone is skipped."""

from __future__ import annotations

import time
from collections.abc import Iterator

import discord
import pytest

from bots.discord.finalise import answered_anew, finalise_record
from bots.discord.format import ANSWERING_AGAIN, WRITING, stop_view
from bots.discord.limits import GLOBAL_SCOPE, channel_scope, interaction_scope
from bots.discord.service import DiscordService
from core.reply.sink import MessageGone, RateLimited
from core.state.inflight import INTERRUPTED_REASON, InflightRecord, MessageRecord
from core.state.store import State
from tests.discord.conftest import StartBot, answer, eventually, finished, pings_nobody, stream
from tests.fakes.discord_server import (
    ALICE,
    BOB,
    CHANNEL_ID,
    EDIT_MESSAGE,
    FLAG_LOADING,
    GUILD_ID,
    FakeDiscord,
    InteractionRecord,
)
from tests.fakes.discord_server import MessageRecord as FakeMessage
from tests.fakes.llm_server import FakeLLMServer, FakeResponse


class Ledger:
    """The budget's acquires and blocks during a test."""

    def __init__(self, state: State, monkeypatch: pytest.MonkeyPatch) -> None:
        self.acquired: list[str] = []
        self.blocked: list[tuple[str, float]] = []
        acquire, block = state.budget.acquire, state.budget.block

        async def recording_acquire(scope: str) -> float:
            self.acquired.append(scope)
            return await acquire(scope)

        async def recording_block(scope: str, seconds: float) -> None:
            self.blocked.append((scope, seconds))
            await block(scope, seconds)

        monkeypatch.setattr(state.budget, "acquire", recording_acquire)
        monkeypatch.setattr(state.budget, "block", recording_block)


@pytest.fixture
def ledger(state: State, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    return Ledger(state, monkeypatch)


async def streaming_messages(
    service: DiscordService, fake: FakeDiscord, n: int
) -> list[FakeMessage]:
    """``n`` bot messages in the channel that look mid-reply: "writing…" and Stop."""
    channel = service.client.get_partial_messageable(CHANNEL_ID, guild_id=GUILD_ID)
    sent = []
    for i in range(n):
        message = await channel.send(
            f"page {i} <@&1> @everyone\n-# {WRITING}",
            view=stop_view("ab12", 1),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        sent.append(fake.message(CHANNEL_ID, message.id))
    return sent


def channel_target(message: FakeMessage) -> dict[str, str]:
    return {
        "kind": "channel",
        "channel": str(CHANNEL_ID),
        "guild": str(GUILD_ID),
        "message": str(message.id),
        "render": "content",
    }


def record(
    *messages: MessageRecord,
    outcome: str = "",
    reason: str = "",
    handover: dict[str, object] | None = None,
    started: float | None = None,
) -> InflightRecord:
    return InflightRecord(
        "ab12",
        "discord",
        messages=messages,
        outcome=outcome,
        reason=reason,
        started=time.time() if started is None else started,
        handover=handover or {},
    )


HANDOVER: dict[str, object] = {"v": 1, "kind": "ask"}
"""Any hand-over: the finaliser only asks whether there is one."""


def response_target(fake: FakeDiscord, interaction: InteractionRecord) -> dict[str, str]:
    """The record's target of an ``/ask``'s deferred response."""
    assert interaction.original is not None
    return {
        "kind": "interaction",
        "app": str(fake.app_id),
        "token": interaction.token,
        "channel": str(CHANNEL_ID),
        "message": str(interaction.original.id),
        "render": "content",
    }


def finalise_edits(fake: FakeDiscord, since: int) -> Iterator[dict[str, object]]:
    for call in fake.calls[since:]:
        if call.method == "PATCH":
            yield call.json


async def test_every_open_message_gets_its_text_and_only_the_last_says_how_it_ended(
    fake: FakeDiscord, start_bot: StartBot, state: State, ledger: Ledger
) -> None:
    async with start_bot() as service:
        first, second, third = await streaming_messages(service, fake, 3)
        done = MessageRecord(channel_target(first), "page 0 was final", final=True)
        texts = ["page 1 <@&1> whole", "page 2 @everyone, the end"]
        since = len(fake.calls)
        ledger.acquired.clear()
        await finalise_record(
            service.client,
            state.budget,
            record(
                done,
                MessageRecord(channel_target(second), texts[0]),
                MessageRecord(channel_target(third), texts[1]),
                outcome="failed",
                reason="the model provider returned an error: overloaded",
            ),
        )
        edits = list(finalise_edits(fake, since))
    assert first.edits == []  # final already: left alone
    assert answer(second) == texts[0] and second.content.count("\n-# ") == 0  # no note
    assert answer(third) == texts[1]
    assert third.content.endswith(
        "-# ⚠️ The reply failed: the model provider returned an error: overloaded"
    )
    assert finished(second) and finished(third)
    assert len(edits) == 2 and all(
        pings_nobody(e.get("allowed_mentions")) for e in edits if isinstance(e, dict)
    )
    assert second.mention_roles == [] and not third.mention_everyone
    scope = channel_scope(CHANNEL_ID)
    assert ledger.acquired == [scope, GLOBAL_SCOPE, scope, GLOBAL_SCOPE]


async def test_without_an_outcome_the_last_message_says_interrupted(
    fake: FakeDiscord, start_bot: StartBot, state: State
) -> None:
    async with start_bot() as service:
        [message] = await streaming_messages(service, fake, 1)
        await finalise_record(
            service.client,
            state.budget,
            record(MessageRecord({**channel_target(message), "render": "embeds"}, "Half an")),
        )
    assert message.content == ""
    [embed] = message.embeds
    assert embed["description"] == "Half an"
    reason = INTERRUPTED_REASON.removeprefix("the reply was interrupted").lstrip(" :")
    assert embed["footer"]["text"] == f"⚠️ The reply was interrupted: {reason}"  # said once
    assert message.components == []


async def test_a_429_blocks_the_scope_and_leaves_the_record_for_later(
    fake: FakeDiscord, start_bot: StartBot, state: State, ledger: Ledger
) -> None:
    async with start_bot() as service:
        [message] = await streaming_messages(service, fake, 1)
        # discord.py retries a 429 five times in place; the sixth answer is ours.
        fake.faults.add(EDIT_MESSAGE, "429", count=5, retry_after=0.05)
        with pytest.raises(RateLimited):
            await finalise_record(
                service.client, state.budget, record(MessageRecord(channel_target(message), "x"))
            )
        # The learner blocked the scope on each 429 discord.py saw, the finaliser on the
        # one it was left with (Discord's Retry-After header: whole seconds).
        assert service.learner.rate_limited == 5
        assert ledger.blocked == [(channel_scope(CHANNEL_ID), 1.0)] * 6
        assert not finished(message)
        await finalise_record(
            service.client, state.budget, record(MessageRecord(channel_target(message), "x"))
        )
    assert finished(message) and answer(message) == "x"


async def test_gone_messages_are_skipped_and_all_gone_says_so(
    fake: FakeDiscord, start_bot: StartBot, state: State
) -> None:
    async with start_bot() as service:
        deleted, alive = await streaming_messages(service, fake, 2)
        await (
            service.client.get_partial_messageable(CHANNEL_ID)
            .get_partial_message(deleted.id)
            .delete()
        )
        await finalise_record(
            service.client,
            state.budget,
            record(
                MessageRecord(channel_target(deleted), "gone"),
                MessageRecord(channel_target(alive), "still here"),
            ),
        )
        assert finished(alive) and answer(alive) == "still here"
        with pytest.raises(MessageGone):
            await finalise_record(
                service.client,
                state.budget,
                record(MessageRecord(channel_target(deleted), "gone")),
            )
        calls = len(fake.calls)
        old = InflightRecord(
            "cd34",
            "discord",
            messages=(
                MessageRecord(
                    {"kind": "interaction", "app": "1", "token": "t", "message": "2"}, "old"
                ),
            ),
            started=time.time() - 901,
        )
        with pytest.raises(MessageGone):  # a token past its 15 minutes: not even tried
            await finalise_record(service.client, state.budget, old)
        assert len(fake.calls) == calls


async def test_a_message_moved_from_an_ask_has_the_old_one_point_to_it(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
    ledger: Ledger,
) -> None:
    llm_server.enqueue(stream(["Asked."]))
    async with start_bot() as service:
        interaction = await fake.inject_slash_command("ask", {"prompt": "hi"})
        await eventually(
            lambda: interaction.original is not None and finished(interaction.original)
        )
        original = interaction.original
        assert original is not None
        [moved] = await streaming_messages(service, fake, 1)
        target = {
            **channel_target(moved),
            "from_app": str(fake.app_id),
            "from_token": interaction.token,
            "from_message": str(original.id),
        }
        ledger.acquired.clear()
        await finalise_record(
            service.client, state.budget, record(MessageRecord(target, "Moved, whole."))
        )
    assert answer(moved) == "Moved, whole." and finished(moved)
    assert f"/{GUILD_ID}/{CHANNEL_ID}/{moved.id}" in original.content
    assert pings_nobody(original.history[-1].allowed_mentions)
    assert ledger.acquired[-1] == interaction_scope(interaction.token)


async def test_a_reply_that_showed_nothing_makes_way_for_its_answer_anew(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    start_bot: StartBot,
    state: State,
    ledger: Ledger,
) -> None:
    """The registry answers it anew right after: an ``/ask`` response says so (the
    answer comes into it), a channel message showing only the reasoning goes (the
    answer comes as the reply). Without a hand-over, "thinking…" is ended as an
    interruption; it never stays."""
    stalled = FakeResponse(chunks=[], stall_after=0)
    llm_server.enqueue(stalled, stalled)
    async with start_bot() as service:
        asks = [
            await fake.inject_slash_command("ask", {"prompt": "hm"}, user=u) for u in (ALICE, BOB)
        ]
        await llm_server.wait_requests(2)  # both deferred: "thinking…"
        anew, interrupted = asks
        [reasoning] = await streaming_messages(service, fake, 1)
        ledger.acquired.clear()
        empty = [
            MessageRecord(response_target(fake, anew), ""),
            MessageRecord(channel_target(reasoning), ""),
        ]
        assert answered_anew(record(*empty, handover=HANDOVER))
        await finalise_record(service.client, state.budget, record(*empty, handover=HANDOVER))
        assert ledger.acquired == [
            interaction_scope(anew.token),
            channel_scope(CHANNEL_ID),
            GLOBAL_SCOPE,
        ]
        original = anew.original
        assert original is not None
        assert original.content == f"-# {ANSWERING_AGAIN}" and finished(original)
        assert pings_nobody(original.history[-1].allowed_mentions)
        assert reasoning.deleted

        lone = record(MessageRecord(response_target(fake, interrupted), ""))
        assert not answered_anew(lone)
        await finalise_record(service.client, state.budget, lone)
        other = interrupted.original
        assert other is not None and not other.flags & FLAG_LOADING
        assert other.content == "-# ⚠️ The reply was interrupted: the process writing it stopped"

        calls = len(fake.calls)
        late = record(*empty[:1], handover=HANDOVER, started=time.time() - 901)
        with pytest.raises(MessageGone):  # its token is dead: nothing can be written
            await finalise_record(service.client, state.budget, late)
        assert len(fake.calls) == calls
        # One that showed text is finalised, not cleared, hand-over or not.
        assert not answered_anew(
            record(MessageRecord(channel_target(reasoning), "x"), handover=HANDOVER)
        )
        assert not answered_anew(record(*empty, outcome="done", handover=HANDOVER))
