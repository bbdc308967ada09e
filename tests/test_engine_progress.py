"""What the engine reports as shown (``progress``) is exactly what the platform
shows after each confirmed call: on an append-only sink the text up to the
delta's end, never a held-back tail; on a replace-style one the frame's text."""

from __future__ import annotations

import asyncio

import pytest

from core.clock import FakeClock
from core.llm.events import Finish
from core.reply.engine import Reply
from core.reply.sink import Place
from tests.fakes.recording_sink import RecordingSink
from tests.test_engine import scripted
from tests.test_engine_delivery import MENTIONY, chunked

TEXT = " ".join([MENTIONY] * 3)


@pytest.mark.parametrize("append_only", [True, False])
async def test_progress_reports_what_each_message_shows(append_only: bool) -> None:
    clock = FakeClock()
    sink = RecordingSink(clock, limit=80, append_only=append_only)
    reports: list[tuple[str | None, str]] = []

    def progress(index: int, text: str | None, final: bool, place: Place | None) -> None:
        reports.append((text, sink.messages[index]))

    reply = Reply(sink, clock=clock, progress=progress)
    steps = [*chunked(TEXT, range(3, len(TEXT), 4), 0.2), (0.0, Finish("stop"))]
    task = asyncio.ensure_future(reply.run(scripted(clock, steps)))
    await clock.run(task)
    assert task.result().text == TEXT and len(sink.texts()) > 1
    calls = sink.text_calls()
    assert len(reports) == len(calls)
    assert all(reported == shown for reported, shown in reports)
    if append_only:  # some frame held a tail back, or this shows nothing
        frames = [call.frame for call in calls if call.frame is not None]
        assert any(f.delta != f.text[f.sent :] for f in frames)
