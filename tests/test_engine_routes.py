"""What the engine tells the budget and the sink when limits bind: each call's
urgency (its ``Turn``), and a route chosen per reply by whether the scarce
slot is free now. Fake time, a recording sink."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from core.clock import FakeClock
from core.reply.budget import LimitTable, LocalBudget, Turn, Urgency, Window
from core.reply.engine import Reply
from core.reply.sink import RouteChoice, SinkCall
from tests.fakes.recording_sink import RecordingSink
from tests.test_engine import finished, scripted, tokens


class TurnLog(LocalBudget):
    """A LocalBudget that notes the turn of every acquire."""

    def __init__(self, clock: FakeClock, limits: LimitTable | None = None) -> None:
        super().__init__(limits, clock)
        self.turns: list[tuple[str, Turn | None]] = []

    async def acquire(self, scope: str, turn: Turn | None = None) -> float:
        self.turns.append((scope, turn))
        return await super().acquire(scope, turn)


@dataclass
class TwoRouteSink(RecordingSink):
    """A platform with a scarce way to create a message ("stream", append-only)
    and a plentiful one ("post", replaced on each edit)."""

    streaming: bool = True
    fell_back: int = 0
    routes: list[str] = field(default_factory=list)

    @property  # type: ignore[override]
    def append_only(self) -> bool:
        return self.streaming

    @append_only.setter
    def append_only(self, value: bool) -> None:  # the dataclass field's default
        pass

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        if call is SinkCall.OPEN:
            return ()
        if index not in self.messages and self.streaming:
            return ("stream",)
        return ("post",)

    def contested_scope(self, call: SinkCall, index: int) -> str | None:
        if call is SinkCall.OPEN or index in self.messages or not self.streaming:
            return None
        return "stream"

    def fall_back(self) -> None:
        self.streaming = False
        self.fell_back += 1


async def run(sink: RecordingSink, budget: LocalBudget, clock: FakeClock, text: str) -> None:
    reply = Reply(sink, budget=budget, clock=clock)
    task = asyncio.ensure_future(reply.run(scripted(clock, finished(tokens(text, 0.1)))))
    await clock.run(task)
    assert task.result().outcome.state == "done"


async def test_each_call_says_how_urgent_it_is() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    budget = TurnLog(clock)
    await run(sink, budget, clock, "The quick brown fox jumps over the lazy dog. " * 3)
    turns = [turn for _, turn in budget.turns]
    assert turns[0] == Turn(Urgency.FIRST_TEXT, 0.0)  # since the reply started
    assert turns[-1] is not None and turns[-1].urgency is Urgency.FINAL
    updates = turns[1:-1]
    assert updates and all(t is not None and t.urgency is Urgency.UPDATE for t in updates)
    # An update's "since" is when the reply last showed something: the call before.
    text_calls = sink.text_calls()
    for turn, previous in zip(updates, text_calls, strict=False):
        assert turn is not None and turn.since == pytest.approx(previous.at)


async def test_a_free_scarce_slot_takes_the_preferred_route_and_is_spent_once() -> None:
    clock = FakeClock()
    sink = TwoRouteSink(clock)
    assert isinstance(sink, RouteChoice)
    budget = TurnLog(clock, LimitTable({"stream": Window(1, 60)}))
    await run(sink, budget, clock, "Hello there, streaming all the way. " * 3)
    assert sink.fell_back == 0
    assert [scope for scope, _ in budget.turns].count("stream") == 0  # taken by try_acquire
    assert not await budget.try_acquire("stream")  # ...and only once
    assert sink.texts() == ["Hello there, streaming all the way. " * 3]


async def test_no_scarce_slot_now_means_the_plentiful_route_for_the_whole_reply() -> None:
    clock = FakeClock()
    sink = TwoRouteSink(clock)
    budget = TurnLog(clock, LimitTable({"stream": Window(1, 60)}))
    assert await budget.try_acquire("stream")  # another reply took this minute's start
    text = "A **bold claim that arrives in pieces** and plain words after it. " * 4
    await run(sink, budget, clock, text)
    assert sink.fell_back == 1
    assert "stream" not in {scope for scope, _ in budget.turns}
    assert sink.texts() == [text]
    # The first text went out at once (no wait for the start a minute away), and
    # frames of a replace-style route are healed like any post and edit.
    first = sink.text_calls()[0]
    assert first.at < 1.0
    healed = [c.frame.text for c in sink.text_calls()[:-1] if c.frame is not None]
    assert any(not text.startswith(frame) for frame in healed), healed
