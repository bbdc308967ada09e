"""The engine's delivery promise on a fake clock: only confirmed text counts as
shown, a held-back tail survives a failed call, a final frame that keeps failing
is handed back instead of dropped, and no call is wasted on a superseded frame."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import FakeClock
from core.llm.events import Finish, TextDelta
from core.reply.budget import Limit, LimitTable, LocalBudget
from core.reply.engine import FinalRetry, Reply, ReplyResult
from core.reply.holdback import HOLD_BACK, appendable
from core.reply.sink import Frame, Outcome, RateLimited, Reroute, SinkCall, UserStopped
from tests.fakes.recording_sink import Call, RecordingSink
from tests.test_engine import Step, finished, scripted, tokens


async def run(
    clock: FakeClock,
    sink: RecordingSink,
    steps: Sequence[Step],
    *,
    budget: LocalBudget | None = None,
    retry: FinalRetry | None = None,
    progress: list[tuple[int, str, bool]] | None = None,
) -> ReplyResult:
    reply = Reply(
        sink,
        budget=budget or LocalBudget(clock=clock),
        clock=clock,
        retry=retry,
        progress=(lambda i, t, f, _: progress.append((i, t, f))) if progress is not None else None,
    )
    task = asyncio.ensure_future(reply.run(scripted(clock, steps)))
    await clock.run(task)
    return task.result()


def chunked(text: str, cuts: Sequence[int], every: float = 0.3) -> list[Step]:
    bounds = sorted({c for c in cuts if 0 < c < len(text)})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    return [(every, TextDelta(p)) for p in pieces]


MENTIONY = "mail bob@example.com please, then <!channel> and <@U123ABC> or @here now"


def test_appendable_holds_a_tail_that_could_still_become_a_mention() -> None:
    assert appendable("mail bob@exam", final=False) == len("mail bob")
    assert appendable("ping <!chan", final=False) == len("ping ")
    assert appendable("x <", final=False) == 2
    assert appendable("x @", final=False) == 2
    assert appendable("x <@U1> y", final=False) == len("x <@U1> y")  # closed by '>'
    assert appendable("bob@example.com please", final=False) == len("bob@example.com please")
    assert appendable("mail bob@exam", final=True) == len("mail bob@exam")
    far = "<" + "a" * HOLD_BACK
    assert appendable(far, final=False) == len(far)  # too far back to be a growing mention


async def test_a_429_on_an_append_loses_no_held_back_text() -> None:
    """The Slack bug: a tail held back, then the append 429s and is resent."""
    clock = FakeClock()
    failed: list[int] = []

    def fail(call: Call, n: int) -> Exception | None:
        if call.kind is SinkCall.UPDATE and len(failed) < 3 and n % 2 == 0:
            failed.append(n)
            return RateLimited(0.5)
        return None

    sink = RecordingSink(clock, append_only=True, fail=fail)
    result = await run(clock, sink, [*chunked(MENTIONY, range(3, 80, 5)), (0.0, Finish("stop"))])
    assert failed, "the schedule never injected a 429"
    assert sink.texts() == [MENTIONY]
    assert result.text == MENTIONY and result.delivered
    for call in sink.text_calls():
        assert call.frame is not None
        if not call.frame.final:  # no appended delta ends inside a possible mention
            assert appendable(call.frame.delta, final=False) == len(call.frame.delta)


@settings(max_examples=60, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.integers(1, len(MENTIONY) - 1), max_size=20),
    failures=st.sets(st.integers(0, 40), max_size=15),
)
def test_any_chunking_and_429s_end_with_the_exact_text_on_an_append_only_sink(
    cuts: list[int], failures: set[int]
) -> None:
    async def go() -> tuple[list[str], ReplyResult]:
        clock = FakeClock()

        def fail(call: Call, n: int) -> Exception | None:
            return RateLimited(0.2) if n in failures else None

        sink = RecordingSink(clock, append_only=True, fail=fail)
        result = await run(clock, sink, [*chunked(MENTIONY, cuts, 0.1), (0.0, Finish("stop"))])
        return sink.texts(), result

    texts, result = asyncio.run(go())
    assert texts == [MENTIONY]
    assert result.delivered


async def test_progress_reports_only_what_the_platform_confirmed() -> None:
    clock = FakeClock()
    sink = RecordingSink(
        clock,
        append_only=True,
        fail=lambda call, n: RateLimited(1.0) if n == 2 else None,
    )
    progress: list[tuple[int, str, bool]] = []
    await run(clock, sink, finished(tokens("alpha beta gamma delta", 0.4)), progress=progress)
    shown = [text for _, text, _ in progress]
    assert shown == sorted(shown, key=len)  # never shrinks, never skips ahead
    assert all("alpha beta gamma delta".startswith(t) for t in shown)
    assert progress[-1] == (0, "alpha beta gamma delta", True)
    confirmed = sum(1 for c in sink.text_calls())
    assert len(progress) == confirmed


async def test_a_final_frame_refused_for_good_is_handed_back_with_its_outcome() -> None:
    clock = FakeClock()
    sink = RecordingSink(
        clock, fail=lambda call, n: RuntimeError("500") if call.kind is SinkCall.FINISH else None
    )
    retry = FinalRetry(attempts=4, backoff=1.0, max_backoff=2.0, give_up_after=1000)
    result = await run(clock, sink, finished(tokens("some text", 0.1)), retry=retry)
    assert not result.delivered and not result.gone
    assert [f.text for f in result.undelivered] == ["some text"]
    assert result.undelivered[0].final
    assert result.stats.sink_errors == 4
    assert clock.now() < 10  # 1 + 2 + 2 s of backoff, then handed back


async def test_a_429_storm_on_the_final_frame_is_handed_back_after_give_up_after() -> None:
    clock = FakeClock()
    sink = RecordingSink(
        clock, fail=lambda call, n: RateLimited(5.0) if call.kind is SinkCall.FINISH else None
    )
    retry = FinalRetry(give_up_after=20.0)
    result = await run(clock, sink, finished(tokens("some text", 0.1)), retry=retry)
    assert [f.text for f in result.undelivered] == ["some text"]
    assert 20.0 <= clock.now() <= 27.0


async def test_a_page_that_cannot_be_closed_does_not_abandon_the_reply() -> None:
    clock = FakeClock()
    text = ("word " * 30).strip()

    def fail(call: Call, n: int) -> Exception | None:
        frame = call.frame
        if frame is not None and frame.index == 0 and frame.final:
            return RuntimeError("internal_error")
        return None

    sink = RecordingSink(clock, limit=60, fail=fail)
    retry = FinalRetry(attempts=2, backoff=0.1)
    result = await run(clock, sink, finished(tokens(text, 0.1, size=7)), retry=retry)
    assert [f.index for f in result.undelivered] == [0]
    assert result.messages == len(result.pages) >= 3
    # every later page was shown and closed; page 0's final text waits for a retry
    assert [sink.finals[i] for i in range(1, len(result.pages))] == [
        p.render(text) for p in result.pages[1:]
    ]
    assert result.undelivered[0].text == result.pages[0].render(text)


async def test_no_update_is_sent_when_the_stream_ends_during_its_budget_wait() -> None:
    clock = FakeClock()
    budget = LocalBudget(LimitTable({"test:*": Limit(1, 10)}), clock)
    sink = RecordingSink(clock)
    steps = [(0.1, TextDelta("a")), (0.1, TextDelta("b")), (0.1, Finish("stop"))]
    await run(clock, sink, steps, budget=budget)
    kinds = [c.kind for c in sink.calls]
    # OPEN at 0, then one slot per 10 s: the update that waited for t=10 saw the
    # end and the final frame took its slot.
    assert kinds == [SinkCall.OPEN, SinkCall.FINISH]
    assert [c.at for c in sink.calls] == [0.0, 10.0]
    assert sink.texts() == ["ab"]


@dataclass
class SwitchingSink(RecordingSink):
    """Plays a platform that closes the stream once: the first update is refused
    with ``Reroute`` and the route (hence scope) changes."""

    rerouted: bool = False
    scope_log: list[tuple[SinkCall, tuple[str, ...]]] = field(default_factory=list)

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        scopes = ("test:edit",) if self.rerouted else ("test:append",)
        self.scope_log.append((call, scopes))
        return scopes

    async def render(self, frame: Frame) -> None:
        if frame.index in self.messages and not self.rerouted:
            self.rerouted = True
            raise Reroute("stream closed")
        await super().render(frame)


async def test_reroute_resends_the_same_frame_under_the_new_route_s_budget() -> None:
    clock = FakeClock()
    budget = LocalBudget(LimitTable({"test:edit": Limit(1, 5)}), clock)
    sink = SwitchingSink(clock)
    result = await run(clock, sink, finished(tokens("one two three four", 0.5)), budget=budget)
    assert result.delivered and sink.texts() == ["one two three four"]
    after = [
        scopes
        for _, scopes in sink.scope_log[
            sink.scope_log.index((SinkCall.UPDATE, ("test:append",))) + 1 :
        ]
    ]
    assert after and all(s == ("test:edit",) for s in after)
    edits = [c.at for c in sink.text_calls()[1:]]
    assert all(b - a >= 5 - 1e-9 for a, b in itertools.pairwise(edits))


async def test_the_platform_s_own_stop_ends_the_reply_stopped_with_its_text() -> None:
    clock = FakeClock()
    stopped = False

    def fail(call: Call, n: int) -> Exception | None:
        nonlocal stopped
        if call.kind is SinkCall.UPDATE and not stopped:
            stopped = True
            return UserStopped()
        return None

    sink = RecordingSink(clock, fail=fail)
    steps = [(0.2 * i, TextDelta(f"w{i} ")) for i in range(1, 30)]
    result = await run(clock, sink, [*steps, (0.0, Finish("stop"))])
    assert result.outcome == Outcome("stopped")
    assert sink.outcome == Outcome("stopped")
    assert result.delivered
    assert sink.texts() == [result.text]
    assert len(result.text) < len("".join(s[1].text for s in steps))  # type: ignore[union-attr]


async def test_the_reply_indicator_never_delays_the_first_text() -> None:
    """OPEN goes out only when a slot is free now, and is not retried after a 429."""
    clock = FakeClock()
    budget = LocalBudget(LimitTable({"test:*": Limit(1, 10)}), clock)
    assert await budget.try_acquire("test:channel")  # someone else took the only slot
    sink = RecordingSink(clock)
    await run(clock, sink, finished(tokens("hello there", 0.1)), budget=budget)
    assert SinkCall.OPEN not in [c.kind for c in sink.calls]  # skipped, not waited for
    clock = FakeClock()
    limited = RecordingSink(
        clock, fail=lambda call, n: RateLimited(30.0) if call.kind is SinkCall.OPEN else None
    )
    await run(clock, limited, finished([(0.1, TextDelta("hi"))]))
    assert limited.attempts == 2  # OPEN once (429, not retried), then the final frame
    assert limited.texts() == ["hi"]
