"""The reply engine against a recording sink, on a fake clock: pacing, budget
sharing, 429s, splitting, healing, failures, stop, and the no-loss property."""

from __future__ import annotations

import asyncio
import gc
import itertools
import tracemalloc
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import FakeClock
from core.llm.events import Event, Finish, ReasoningDelta, StreamError, TextDelta, Usage
from core.reply.budget import Limit, LimitTable, LocalBudget
from core.reply.engine import FinalRetry, Reply, ReplyResult
from core.reply.markdown import Paginator, unsplit
from core.reply.pacing import Pacing
from core.reply.sink import SinkCall
from tests.fakes.recording_sink import Call, RecordingSink, gone_on, rate_limit_on

Step = tuple[float, Event]


async def scripted(
    clock: FakeClock, steps: Sequence[Step], closed: list[bool] | None = None
) -> AsyncIterator[Event]:
    """Yields each event after its delay (fake seconds)."""
    try:
        for delay, event in steps:
            if delay:
                await clock.sleep(delay)
            yield event
    finally:
        if closed is not None:
            closed.append(True)


def tokens(text: str, every: float, size: int = 4) -> list[Step]:
    return [(every, TextDelta(text[i : i + size])) for i in range(0, len(text), size)]


def finished(steps: list[Step], reason: str = "stop") -> list[Step]:
    return [*steps, (0.0, Usage(5, 7)), (0.0, Finish(reason))]


def expected_messages(text: str, limit: int) -> list[str]:
    return [page.render(text) for page in Paginator(limit, reserve=16).freeze(text, final=True)]


async def run_reply(
    clock: FakeClock,
    sink: RecordingSink,
    steps: Sequence[Step],
    *,
    budget: LocalBudget | None = None,
    pacing: Pacing | None = None,
) -> ReplyResult:
    reply = Reply(
        sink, budget=budget or LocalBudget(clock=clock), pacing=pacing or Pacing(), clock=clock
    )
    task = asyncio.ensure_future(reply.run(scripted(clock, steps)))
    await clock.run(task)
    return task.result()


TEXT = "The quick brown fox jumps over the lazy dog. " * 20


async def test_streams_paced_updates_and_ends_with_exact_text() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    result = await run_reply(clock, sink, finished(tokens(TEXT, 0.05)))  # 80 tokens/s... 11.25 s
    assert result.outcome.state == "done" and result.outcome.reason is None
    assert sink.texts() == [TEXT]
    assert sink.calls[0].kind is SinkCall.OPEN
    assert sink.calls[-1].kind is SinkCall.FINISH
    updates = sink.text_calls()
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates[:-1])]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps), gaps
    assert 10 <= len(updates) <= 14
    assert result.usage == Usage(5, 7)
    # every intermediate frame is a prefix of the final text (healing adds nothing here)
    assert all(TEXT.startswith(c.frame.text) for c in updates if c.frame)


async def test_first_frame_goes_out_at_once_then_pacing() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    await run_reply(clock, sink, finished([(0.3, TextDelta("Hi")), (0.1, TextDelta(" there"))]))
    first = sink.text_calls()[0]
    assert first.at == pytest.approx(0.3)
    assert first.frame is not None and first.frame.text == "Hi"


async def test_no_update_without_new_text() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    steps = [(0.1, TextDelta("a")), (30.0, TextDelta("b")), (0.0, Finish("stop"))]
    await run_reply(clock, sink, steps)
    assert [c.at for c in sink.text_calls()] == pytest.approx([0.1, 30.1])
    assert sink.texts() == ["ab"]


async def test_character_threshold_holds_small_changes_until_max_wait() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    steps = [
        (0.0, TextDelta("x" * 50)),
        *[(0.5, TextDelta("y")) for _ in range(10)],
        (0.0, Finish("stop")),
    ]
    await run_reply(clock, sink, steps, pacing=Pacing(min_interval=1.0, min_chars=20, max_wait=3.0))
    times = [c.at for c in sink.text_calls()]
    assert times[:2] == pytest.approx([0.0, 3.0])  # 6 chars by t=3: shown only because of max_wait
    assert sink.texts() == ["x" * 50 + "y" * 10]


async def test_budget_wait_coalesces_text_and_final_is_never_dropped() -> None:
    clock = FakeClock()
    budget = LocalBudget(LimitTable({"test:*": Limit(1, 10)}), clock)
    sink = RecordingSink(clock)
    result = await run_reply(clock, sink, finished(tokens(TEXT, 0.01)), budget=budget)
    times = [c.at for c in sink.calls]
    assert all(b - a >= 10 - 1e-9 for a, b in itertools.pairwise(times))
    assert sink.texts() == [TEXT]
    assert result.outcome.state == "done"


async def test_concurrent_replies_share_one_scope_fairly_within_its_limit() -> None:
    clock = FakeClock()
    limit = Limit(5, 5)  # Discord's observed per-channel limit, as a window-safe GCRA
    budget = LocalBudget(LimitTable({"test:channel": limit}), clock)
    sinks = [RecordingSink(clock) for _ in range(5)]
    texts = [f"reply {i}: " + TEXT for i in range(5)]
    replies = [
        Reply(sink, budget=budget, pacing=Pacing(min_interval=0.5), clock=clock) for sink in sinks
    ]
    tasks = [
        asyncio.ensure_future(reply.run(scripted(clock, finished(tokens(text, 0.02)))))
        for reply, text in zip(replies, texts, strict=True)
    ]
    await clock.run(asyncio.ensure_future(asyncio.gather(*tasks)))
    all_times = sorted(c.at for sink in sinks for c in sink.calls)
    for i, start in enumerate(all_times):
        in_window = [t for t in all_times[i:] if t < start + 5.0 - 1e-9]
        assert len(in_window) <= 5
    counts = [len(sink.text_calls()) for sink in sinks]
    assert max(counts) - min(counts) <= 2, counts
    assert [sink.texts() for sink in sinks] == [[text] for text in texts]


async def test_rate_limited_call_blocks_the_scope_and_is_retried() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock, fail=rate_limit_on({2}, retry_after=4.0))
    result = await run_reply(clock, sink, finished(tokens(TEXT, 0.05)))
    assert result.stats.rate_limited == 1
    times = [c.at for c in sink.calls]
    # call #2 hit the 429 at t≈1; nothing was sent again until it passed
    assert times[2] >= times[1] + 4.0 - 1e-9
    assert sink.texts() == [TEXT]


async def test_429_storm_on_the_final_frame_still_delivers_it() -> None:
    clock = FakeClock()
    storm = {5, 6, 7, 8, 9, 10, 11, 12}
    sink = RecordingSink(clock, fail=rate_limit_on(storm, retry_after=2.0))
    result = await run_reply(clock, sink, finished([(0.0, TextDelta("short answer"))]))
    assert result.delivered and sink.outcome is not None
    assert sink.texts() == ["short answer"]


async def test_long_reply_continues_in_new_messages_without_loss() -> None:
    clock = FakeClock()
    text = "".join(
        f"Paragraph {i} talks about things at some length.\n\n```python\nprint({i})\n```\n\n"
        for i in range(40)
    )
    sink = RecordingSink(clock, limit=300)
    result = await run_reply(clock, sink, finished(tokens(text, 0.01, size=7)))
    assert sink.texts() == expected_messages(text, 300)
    assert len(sink.texts()) > 5
    assert result.messages == len(sink.texts())
    assert set(sink.finals) == set(sink.messages)


async def test_intermediate_frames_are_healed_final_ones_are_not() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    steps = [
        (0.0, TextDelta("Look: **bold")),
        (2.0, TextDelta("** and\n```py\nx = 1")),
        (2.0, TextDelta("\n```\n")),
        (0.0, Finish("stop")),
    ]
    await run_reply(clock, sink, steps)
    frames = [c.frame for c in sink.text_calls() if c.frame]
    assert frames[0].text == "Look: **bold**"
    assert frames[1].text.endswith("```py\nx = 1\n```")
    assert frames[-1].text == "Look: **bold** and\n```py\nx = 1\n```\n"
    assert frames[-1].final


async def test_append_only_sink_gets_deltas_that_add_up() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock, append_only=True, limit=500)
    text = "word " * 400
    await run_reply(clock, sink, finished(tokens(text, 0.01)))
    assert "".join(sink.texts()) == text
    assert all(len(m) <= 500 for m in sink.texts())


async def test_error_mid_reply_keeps_partial_text_and_fails_with_reason() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    steps = [*tokens("Partial answer", 0.1), (0.1, StreamError("provider", "overloaded"))]
    result = await run_reply(clock, sink, steps)
    assert result.outcome.state == "failed" and result.outcome.reason == "overloaded"
    assert sink.outcome == result.outcome
    assert sink.texts() == ["Partial answer"]
    assert result.text == "Partial answer"


async def test_stream_that_just_ends_is_a_failure() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    result = await run_reply(clock, sink, tokens("cut", 0.1))
    assert result.outcome.state == "failed"
    assert sink.texts() == ["cut"]


async def test_stop_closes_the_stream_and_keeps_the_text() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    closed: list[bool] = []
    reply = Reply(sink, clock=clock)
    task = asyncio.ensure_future(reply.run(scripted(clock, finished(tokens(TEXT, 0.1)), closed)))
    await clock.advance(2.05)
    reply.stop()
    await clock.run(task)
    result = task.result()
    assert closed == [True]
    assert result.outcome.state == "stopped"
    assert sink.outcome is not None and sink.outcome.state == "stopped"
    assert sink.texts() == [result.text] and TEXT.startswith(result.text) and result.text


async def test_reasoning_travels_apart_from_the_answer() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    steps = [
        (0.0, ReasoningDelta("Let me think. ")),
        (2.0, ReasoningDelta("Done.")),
        (2.0, TextDelta("Answer")),
        (0.0, Finish("stop")),
    ]
    result = await run_reply(clock, sink, steps)
    frames = [c.frame for c in sink.text_calls() if c.frame]
    assert frames[0].text == "" and frames[0].reasoning == "Let me think. "
    assert frames[-1].text == "Answer" and frames[-1].reasoning == "Let me think. Done."
    assert result.text == "Answer" and result.reasoning == "Let me think. Done."


async def test_message_gone_stops_the_reply() -> None:
    clock = FakeClock()
    closed: list[bool] = []
    sink = RecordingSink(clock, fail=gone_on(2))
    reply = Reply(sink, clock=clock)
    task = asyncio.ensure_future(reply.run(scripted(clock, finished(tokens(TEXT, 0.05)), closed)))
    await clock.run(task)
    result = task.result()
    assert not result.delivered
    assert result.outcome.state == "stopped"
    assert closed == [True]
    assert clock.now() < 5  # did not wait for the whole stream


async def test_sink_error_on_an_update_is_survived_and_the_final_retried() -> None:
    clock = FakeClock()
    sink = RecordingSink(
        clock, fail=lambda call, n: RuntimeError("boom") if n in (2, 30, 31) else None
    )
    result = await run_reply(clock, sink, finished(tokens(TEXT, 0.05)))
    assert result.stats.sink_errors >= 1
    assert sink.texts() == [TEXT] and result.delivered


async def test_length_finish_is_done_with_a_note() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock)
    result = await run_reply(clock, sink, finished([(0.0, TextDelta("trunc"))], reason="length"))
    assert result.outcome.state == "done"
    assert result.outcome.reason == "the model hit its length limit"


async def test_stats_measure_first_token_first_visible_and_staleness() -> None:
    clock = FakeClock()
    sink = RecordingSink(clock, latency=0.2)
    result = await run_reply(clock, sink, finished([(0.5, TextDelta("a")), *tokens(TEXT, 0.05)]))
    stats = result.stats
    assert stats.first_token == pytest.approx(0.5)
    assert stats.first_visible == pytest.approx(0.7)  # the token at 0.5, then a 0.2 s call
    assert len(stats.staleness) == 1 + len(tokens(TEXT, 0.05))
    assert max(stats.staleness) <= 1.0 + 2 * 0.2 + 1e-9
    assert min(stats.staleness) >= 0.2 - 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.lists(
        st.sampled_from([*"ab \n`*_#é🎉", "```", "\n\n", "**", "word "]), max_size=400
    ).map("".join),
    limit=st.integers(min_value=60, max_value=400),
    size=st.integers(min_value=1, max_value=40),
    append_only=st.booleans(),
)
def test_any_text_any_chunking_ends_exactly_as_the_model_wrote_it(
    text: str, limit: int, size: int, append_only: bool
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sink = RecordingSink(clock, limit=limit, append_only=append_only)
        result = await run_reply(clock, sink, finished(tokens(text, 0.03, size=size)))
        if text:
            assert unsplit(sink.texts(), result.pages) == text
            if not append_only:  # append-only cuts may move later, by timing
                pages = Paginator(limit, reserve=16).freeze(text, final=True)
                assert list(result.pages) == pages
        assert result.text == text

    asyncio.run(scenario())


async def test_append_only_never_repeats_text_when_a_page_is_cut_late() -> None:
    # The open page shows text past the paragraph break the paginator would prefer;
    # the cut must then come after what was shown, or that text would appear twice.
    clock = FakeClock()
    sink = RecordingSink(clock, append_only=True, limit=120)
    text = "First paragraph here.\n\n" + "x" * 70 + " " + "y" * 200
    steps = [(0.0, TextDelta(text[:100])), (2.0, TextDelta(text[100:])), (0.0, Finish("stop"))]
    result = await run_reply(clock, sink, steps)
    assert unsplit(sink.texts(), result.pages) == text
    assert sink.texts()[0].startswith(text[:100])
    assert result.outcome.state == "done"


async def test_a_final_frame_that_always_fails_ends_the_reply_undelivered() -> None:
    clock = FakeClock()

    def broken_finish(call: Call, n: int) -> Exception | None:
        return RuntimeError("platform down") if call.kind is SinkCall.FINISH else None

    sink = RecordingSink(clock, fail=broken_finish)
    result = await run_reply(clock, sink, finished(tokens("some text", 0.1)))
    assert not result.delivered
    assert result.outcome.state == "done" and result.text == "some text"
    assert result.stats.sink_errors == FinalRetry().attempts
    assert sink.outcome is None  # never shown, but the reply ended instead of hanging


async def test_a_reply_waiting_for_its_stream_costs_under_4_kb() -> None:
    """Memory per active reply: a ``Reply`` before its first token (its slots, its
    two events, its buffers) is 3 KB on CPython 3.11; with an instance dict and
    asyncio's own events it was 5.7 KB."""
    sinks = [RecordingSink(FakeClock()) for _ in range(100)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        replies = [Reply(sink) for sink in sinks]
        per_reply = (tracemalloc.get_traced_memory()[0] - before) / len(replies)
    finally:
        tracemalloc.stop()
    assert per_reply < 4096
