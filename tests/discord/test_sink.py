"""The Discord sink under the real engine, on a fake clock, with outlets that play
Discord: the engine acquires every call the sink makes (the sink holds no
budget), a dead interaction token reroutes the frame to the channel, the note
on the message a reply moved from is a declared call that stays owed until it
is written, and nothing reaches the in-flight record before Discord confirmed it."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import discord

from bots.discord.api import ChannelOutlet, InteractionOutlet, TokenExpired
from bots.discord.format import Rendered
from bots.discord.limits import GLOBAL_SCOPE, channel_scope
from bots.discord.sink import DiscordReplySink
from core.clock import FakeClock
from core.llm.events import Finish, TextDelta
from core.reply.budget import LocalBudget, Turn
from core.reply.engine import FinalRetry, Reply, ReplyResult
from core.reply.sink import RateLimited
from tests.test_engine import Step, scripted

INTERACTION = "discord:interaction:stub"
CHANNEL = channel_scope(1)


@dataclass
class Discord:
    """What the stub outlets did, in order, with the budget's acquires among them:
    ``("acquire", scope)`` and ``("call", scopes, kind, message id, content)``
    (``"refused"`` for a call that failed: it was made, and paid, all the same)."""

    log: list[tuple[Any, ...]] = field(default_factory=list)
    shown: dict[int, str] = field(default_factory=dict)
    """Message id → its content now."""
    stop_button: dict[int, bool] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    fail: dict[tuple[str, int], Exception] = field(default_factory=dict)
    """(kind, n) → the n-th call (0-based) of that kind raises this instead."""
    seen: Counter[str] = field(default_factory=Counter)

    def call(
        self, scopes: Sequence[str], kind: str, message_id: int | None, shown: Rendered, view: Any
    ) -> int:
        n = self.seen[kind]
        self.seen[kind] += 1
        if (kind, n) in self.fail:
            self.log.append(("refused", tuple(scopes), kind, message_id, shown.content))
            raise self.fail[kind, n]
        message_id = next(self.ids) if message_id is None else message_id
        self.log.append(("call", tuple(scopes), kind, message_id, shown.content))
        self.shown[message_id] = shown.content or ""
        self.stop_button[message_id] = view is not None
        return message_id

    def calls(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.log if e[0] == "call" and e[2] == kind]

    def unpaid(self) -> list[tuple[Any, ...]]:
        """Calls that went out without an acquire of each of their scopes before them."""
        credit: Counter[str] = Counter()
        unpaid = []
        for entry in self.log:
            if entry[0] == "acquire":
                credit[entry[1]] += 1
                continue
            for scope in entry[1]:
                if credit[scope] > 0:
                    credit[scope] -= 1
                else:
                    unpaid.append(entry)
        return unpaid


class StubInteraction(InteractionOutlet):
    def __init__(self, d: Discord) -> None:
        self.d = d
        self.original_id = None
        self._scopes = (INTERACTION,)

    async def create(self, message: Rendered, view: discord.ui.View | None, *, first: bool) -> int:
        return self.d.call(self._scopes, "interaction.create", None, message, view)

    async def edit(self, message_id: int, message: Rendered, view: discord.ui.View | None) -> None:
        self.d.call(self._scopes, "interaction.edit", message_id, message, view)

    def target(self, message_id: int) -> dict[str, str]:
        return {"kind": "interaction", "app": "7", "token": "tok", "message": str(message_id)}


class StubChannel(ChannelOutlet):
    def __init__(self, d: Discord) -> None:
        self.d = d
        self._scopes = (CHANNEL, GLOBAL_SCOPE)
        self.replies_to: list[int] = []

    async def create(self, message: Rendered, view: discord.ui.View | None, *, first: bool) -> int:
        return self.d.call(self._scopes, "channel.create", None, message, view)

    async def edit(self, message_id: int, message: Rendered, view: discord.ui.View | None) -> None:
        self.d.call(self._scopes, "channel.edit", message_id, message, view)

    def continue_from(self, message_id: int) -> None:
        self.replies_to.append(message_id)

    def jump_url(self, message_id: int) -> str:
        return f"https://discord.test/channels/1/1/{message_id}"

    def target(self, message_id: int) -> dict[str, str]:
        return {"kind": "channel", "channel": "1", "message": str(message_id)}


class LedgerBudget(LocalBudget):
    """The engine's budget, writing each acquire into Discord's log."""

    def __init__(self, clock: FakeClock, d: Discord) -> None:
        super().__init__(clock=clock)
        self.d = d

    async def acquire(self, scope: str, turn: Turn | None = None) -> float:
        self.d.log.append(("acquire", scope))
        return await super().acquire(scope, turn)


@dataclass
class Run:
    result: ReplyResult
    d: Discord
    channel: StubChannel
    reported: list[tuple[int, dict[str, str], str]]


async def run(
    steps: list[Step],
    *,
    fail: Mapping[tuple[str, int], Exception] | None = None,
    deadline: float | None = None,
    retry: FinalRetry | None = None,
    original: int | None = None,
) -> Run:
    """``original``: the id of the deferred response, when the deferral said it."""
    clock = FakeClock()
    d = Discord(fail=dict(fail or {}))
    channel = StubChannel(d)
    interaction = StubInteraction(d)
    interaction.original_id = original
    reported: list[tuple[int, dict[str, str], str]] = []

    def progress(
        index: int, text: str | None, final: bool, place: Mapping[str, str] | None
    ) -> None:
        """What the engine records in flight: where each message is, and its text
        once Discord confirmed it."""
        if place is None:
            return
        if text is None:
            if any(i == index for i, _, _ in reported):
                return  # a failed call: the message shows what it showed
            text = ""  # exists before any text: the deferred response
        reported.append((index, dict(place), text))

    sink = DiscordReplySink(
        interaction,
        reply_id="r1",
        asker=42,
        fallback=channel,
        deadline=deadline,
        clock=clock,
    )
    reply = Reply(sink, budget=LedgerBudget(clock, d), clock=clock, retry=retry, progress=progress)
    task = asyncio.ensure_future(reply.run(scripted(clock, steps)))
    await clock.run(task)
    return Run(task.result(), d, channel, reported)


def words(n: int, every: float = 0.5) -> list[Step]:
    return [(every, TextDelta(f"w{i} ")) for i in range(n)] + [(0.0, Finish("stop"))]


def text(n: int) -> str:
    return "".join(f"w{i} " for i in range(n))


async def test_a_dead_token_reroutes_the_frame_to_the_channel_through_the_engines_budget() -> None:
    ran = await run(words(12), fail={("interaction.edit", 2): TokenExpired("404 10015")})
    d = ran.d
    assert ran.result.outcome.state == "done" and ran.result.delivered
    [created] = d.calls("interaction.create")
    [moved] = d.calls("channel.create")
    assert ran.channel.replies_to == [created[3]]  # the channel message replies to it
    assert d.shown[moved[3]] == text(12)
    assert not d.stop_button[moved[3]]
    assert len(d.calls("interaction.edit")) == 2  # the token is never used after it died
    assert d.unpaid() == []  # every call paid by the engine, the rerouted one too
    index, target, shown = ran.reported[-1]
    assert (index, target["kind"], target["message"]) == (0, "channel", str(moved[3]))
    assert "from_message" not in target  # a dead token's message can't be pointed on
    assert shown == text(12)


async def test_at_the_deadline_the_move_and_its_note_are_one_paid_call() -> None:
    ran = await run(words(12), deadline=2.2)
    d = ran.d
    [created] = d.calls("interaction.create")
    [moved] = d.calls("channel.create")
    note = d.calls("interaction.edit")[-1]
    assert note[3] == created[3] and "continues here" in note[4] and str(moved[3]) in note[4]
    assert not d.stop_button[created[3]]
    moving = d.log.index(moved)
    # The create and the note were paid together, before the create went out.
    assert d.log[moving - 3 : moving] == [
        ("acquire", CHANNEL),
        ("acquire", GLOBAL_SCOPE),
        ("acquire", INTERACTION),
    ]
    assert d.unpaid() == []
    assert d.shown[moved[3]] == text(12)
    assert ran.result.delivered


async def test_a_note_that_fails_stays_owed_and_holds_the_final_frame_until_written() -> None:
    limited = RateLimited(1.0, INTERACTION)
    fail = {("interaction.edit", n): limited for n in range(3)}  # the note, three times
    ran = await run(words(12), deadline=0.8, fail=fail)
    d = ran.d
    [created] = d.calls("interaction.create")
    [moved] = d.calls("channel.create")
    assert d.seen["interaction.edit"] == 4  # three 429s, then the note went through
    assert "continues here" in d.shown[created[3]] and not d.stop_button[created[3]]
    assert d.unpaid() == []  # each retry of the note was declared and paid
    owed = [t for _, t, _ in ran.reported if "from_message" in t]
    assert owed and owed[0]["from_message"] == str(created[3])
    assert owed[0]["from_token"] == "tok" and owed[0]["message"] == str(moved[3])
    assert "from_message" not in ran.reported[-1][1]  # written: no longer owed
    assert d.shown[moved[3]] == text(12) and ran.result.delivered


async def test_a_note_still_owed_at_the_end_leaves_the_final_frame_to_the_registry() -> None:
    limited = RateLimited(0.5, INTERACTION)
    fail = {("interaction.edit", n): limited for n in range(100)}
    retry = FinalRetry(attempts=3, backoff=0.1, give_up_after=3.0)
    ran = await run(words(6), deadline=0.8, fail=fail, retry=retry)
    assert not ran.result.delivered
    [frame] = ran.result.undelivered
    assert frame.index == 0 and frame.text == text(6)
    index, target, _ = ran.reported[-1]
    assert index == 0 and target["kind"] == "channel" and "from_message" in target


async def test_nothing_is_reported_before_discord_confirmed_it() -> None:
    fail = {("interaction.edit", 1): RuntimeError("500 from Discord")}
    ran = await run(words(8), fail=fail)
    d = ran.d
    confirmed = {c[4] for c in d.log if c[0] == "call"}
    for _, _, shown in ran.reported:
        assert any(content.startswith(shown) for content in confirmed if content)
    # The failed edit's text was not reported: the report after it is the next success.
    assert len(ran.reported) == len(d.calls("interaction.create")) + len(
        d.calls("interaction.edit")
    )


async def test_a_response_known_by_id_is_message_0_and_recorded_before_any_text() -> None:
    """A process that dies while the model thinks leaves a record naming it."""
    ran = await run([(5.0, TextDelta("late ")), *words(4)], original=7)
    d = ran.d
    target = {"kind": "interaction", "app": "7", "token": "tok", "message": "7"}
    assert ran.reported[0] == (0, {**target, "render": "content"}, "")
    assert d.calls("interaction.create") == []  # it exists: edited from the first frame
    assert {c[3] for c in d.calls("interaction.edit")} == {7}
    assert d.shown[7] == "late " + text(4) and not d.stop_button[7]
    assert len(ran.reported) == 1 + len(d.calls("interaction.edit"))
    assert d.unpaid() == [] and ran.result.delivered


async def test_a_response_whose_window_passed_before_any_text_moves_and_points_on() -> None:
    ran = await run([(5.0, TextDelta("late ")), *words(4)], original=7, deadline=1.0)
    d = ran.d
    [moved] = d.calls("channel.create")
    assert ran.channel.replies_to == [7]  # the channel message replies to the response
    assert d.shown[moved[3]] == "late " + text(4)
    assert "continues here" in d.shown[7] and str(moved[3]) in d.shown[7]
    assert d.calls("interaction.create") == [] and not d.stop_button[7]
    assert d.unpaid() == [] and ran.result.delivered
