"""A reply's life: from the model's event stream to a finished platform message.

Two tasks cooperate. The *reader* drains the LLM stream into a buffer as fast
as it arrives, so a slow platform never slows the model down. The *writer*
wakes when there is something new, waits for the reply's pacing and for the
platform budget, and only then takes the latest text: whatever arrived while
it waited is coalesced into one call. When the stream ends, the writer
delivers the final text of every message (waiting for budget as long as it
takes: the final update is never dropped) and the outcome.

The engine owns the text. Messages are pages of it (``core.reply.markdown``), so
their concatenation is exactly the model's text; the sink only renders.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from core.clock import Clock, MonotonicClock, SlimEvent
from core.llm.events import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCall,
    Usage,
)
from core.reply.budget import Budget, LocalBudget, Turn, Urgency
from core.reply.holdback import appendable
from core.reply.markdown import Page, Paginator, heal
from core.reply.observe import CallObserver, ReplyObserver, ReplyStats, ReplyTally
from core.reply.pacing import Pacing
from core.reply.sink import (
    Frame,
    Located,
    MessageGone,
    Outcome,
    Place,
    RateLimited,
    Reroute,
    RouteChoice,
    Sink,
    SinkCall,
    UserStopped,
)

log = logging.getLogger(__name__)

FINISH_NOTES = {
    "length": "the model hit its length limit",
    "content_filter": "the provider's content filter stopped the reply",
}
"""Finish reasons that complete a reply but deserve a word to the user."""

MAX_REROUTES = 3
"""Consecutive ``Reroute``s of one call before it counts as a failure: a sink
that keeps switching routes is broken, and the engine must not spin."""


@dataclass(frozen=True, slots=True)
class FinalRetry:
    """How long a reply keeps trying a message's final frame itself before it
    leaves it to the in-flight registry, which any replica retries for much
    longer (``core.state.inflight``). Injectable, so tests run a 20-second
    outage in milliseconds of fake time."""

    attempts: int = 6
    """Attempts through errors other than 429."""
    backoff: float = 0.5
    """Seconds before the second attempt; doubled for each one after."""
    max_backoff: float = 8.0
    give_up_after: float = 30.0
    """Seconds of trying one final frame, 429s (always retried after their
    Retry-After) included."""


Progress = Callable[[int, str | None, bool, Place | None], None]
"""Told after every text call: (message index, the text it now shows or None
when the call failed, whether that is its final text, where the message is as
the sink's ``place`` says). A failed call may still have moved a message (the
sink changed what the platform confirmed before the failure), so the place is
reported either way. Synchronous on purpose: whoever records it (the in-flight
registry) must not hold the reply up."""


@dataclass(frozen=True, slots=True)
class ReplyResult:
    outcome: Outcome
    text: str
    reasoning: str
    usage: Usage | None
    tool_calls: tuple[ToolCall, ...]
    messages: int
    """How many platform messages the reply used."""
    pages: tuple[Page, ...]
    """How the text was cut into those messages (``markdown.unsplit`` joins them back)."""
    stats: ReplyStats
    delivered: bool
    """False when the final state could not be shown (message gone, sink errors)."""
    undelivered: tuple[Frame, ...] = ()
    """Final frames the platform kept refusing, oldest first; the last one is the
    reply's own when its ``FINISH`` failed (shown with ``outcome``). Someone must
    deliver them later: the responder leaves them in the in-flight registry."""
    gone: bool = False
    """The message or interaction can no longer be written: nothing to retry."""


class Reply:
    """One reply streaming into one sink. ``run`` it once; ``stop`` it from anywhere."""

    # Slots: a reply has more attributes than an instance dict shares keys for
    # (30), so each one's dict would cost 1.4 KB of every active reply.
    __slots__ = (
        "_append_only",
        "_arrivals",
        "_budget",
        "_calls",
        "_clock",
        "_covered",
        "_created",
        "_ended",
        "_error",
        "_finish",
        "_held",
        "_last_call_end",
        "_length",
        "_located",
        "_pacing",
        "_paged",
        "_paged_pages",
        "_pages_done",
        "_paginator",
        "_parts",
        "_progress",
        "_reader",
        "_reasoning",
        "_reasoning_length",
        "_retry",
        "_routes",
        "_sent",
        "_shown",
        "_sink",
        "_started",
        "_stop",
        "_tally",
        "_undelivered",
        "_usage",
        "_wake",
        "stats",
    )

    def __init__(
        self,
        sink: Sink,
        *,
        budget: Budget | None = None,
        pacing: Pacing | None = None,
        clock: Clock | None = None,
        observer: ReplyObserver | None = None,
        retry: FinalRetry | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._sink = sink
        self._retry = retry or FinalRetry()
        self._progress = progress
        self._clock = clock or MonotonicClock()
        self._budget = budget or LocalBudget(clock=self._clock)
        self._pacing = pacing or Pacing()
        # Told of every call attempt and budget wait (tracing); None costs nothing.
        self._calls = observer if isinstance(observer, CallObserver) else None
        self._append_only = sink.append_only
        self._routes = sink if isinstance(sink, RouteChoice) else None
        self._located = sink if isinstance(sink, Located) else None
        # Healing needs room on replace-style sinks; append-only ones need room to
        # close a code fence after text they can no longer take back.
        self._paginator = Paginator(sink.limit, reserve=16)
        self._tally = ReplyTally(observer)
        self.stats = self._tally.stats

        # Filled by the reader.
        self._parts: list[str] = []
        self._length = 0
        self._reasoning: list[str] = []
        self._reasoning_length = 0
        self._arrivals: deque[tuple[int, float]] = deque()  # (text length after a delta, when)
        self._usage: Usage | None = None
        self._finish: Finish | None = None
        self._error: StreamError | None = None
        self._stop: Outcome | None = None
        self._wake = SlimEvent()  # something new to show, or the end
        self._ended = SlimEvent()  # the stream is over (finished, failed or stopped)

        # Owned by the writer.
        self._shown = -1  # text + reasoning length last shown; -1: nothing shown yet
        self._last_call_end = 0.0
        self._pages_done = 0  # pages whose final text was delivered
        self._created = 0  # messages created on the platform
        self._sent = 0  # rendered characters of page ``_pages_done`` already delivered
        self._covered = 0  # offset in the model's text up to which it is visible
        self._held: list[str] = []  # budget slots acquired for a call that was replaced
        self._undelivered: list[Frame] = []
        self._paged: tuple[int, bool, int] | None = None  # what ``_paged_pages`` were made of
        self._paged_pages: list[Page] = []
        self._started = 0.0
        self._reader: asyncio.Task[None] | None = None

    # -- control ---------------------------------------------------------------

    def stop(self, state: str = "stopped", reason: str | None = None) -> None:
        """End the reply early, keeping its text: a user's Stop (``stopped``) or a
        shutdown (``interrupted``). Closes the model stream at once."""
        if self._stop is None and not self._ended.is_set():
            self._stop = Outcome("interrupted" if state == "interrupted" else "stopped", reason)
            if self._reader is not None:
                self._reader.cancel()
            self._end()

    # -- the reply -------------------------------------------------------------

    async def run(self, events: AsyncIterator[Event]) -> ReplyResult:
        self._started = self._clock.now()
        self._tally.started(self._started)
        self._reader = asyncio.create_task(self._read(events))
        gone = False
        try:
            await self._open()
            await self._write_until_end()
            await self._deliver(final=True)
        except MessageGone as exc:
            log.info("reply target is gone, stopping: %s", exc)
            self.stop("stopped", "the message is no longer available")
            gone = True
        finally:
            if not self._reader.done():
                self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        return ReplyResult(
            outcome=self._outcome(),
            text=self._text(),
            reasoning="".join(self._reasoning),
            usage=self._usage,
            tool_calls=self._finish.tool_calls if self._finish else (),
            messages=self._created,
            pages=tuple(self._pages(final=True)),
            stats=self.stats,
            delivered=not gone and not self._undelivered,
            undelivered=() if gone else tuple(self._undelivered),
            gone=gone,
        )

    def _outcome(self) -> Outcome:
        if self._stop is not None:
            return self._stop
        if self._error is not None:
            return Outcome("failed", self._error.message)
        if self._finish is not None:
            return Outcome("done", FINISH_NOTES.get(self._finish.reason))
        return Outcome("failed", "the model stream ended unexpectedly")

    # -- reader ----------------------------------------------------------------

    async def _read(self, events: AsyncIterator[Event]) -> None:
        # Runs once per chunk: the clock, the length and whether the first token
        # came are locals (self._length is still updated before every await).
        now_of = self._clock.now
        parts = self._parts
        arrivals = self._arrivals
        wake = self._wake
        length = self._length
        first = self.stats.first_token is None
        try:
            async for event in events:
                if type(event) is TextDelta:
                    text = event.text
                    if not text:
                        continue
                    parts.append(text)
                    length += len(text)
                    self._length = length
                    now = now_of()
                    arrivals.append((length, now))
                    if first:
                        first = False
                        self._first_token(now)
                    if not wake.is_set():
                        wake.set()
                elif type(event) is ReasoningDelta:
                    if event.text:
                        self._reasoning.append(event.text)
                        self._reasoning_length += len(event.text)
                        if first:
                            first = False
                            self._first_token(now_of())
                        wake.set()
                elif type(event) is Usage:
                    self._usage = event
                elif type(event) is Finish:
                    self._finish = event
                    break
                elif type(event) is StreamError:
                    self._error = event
                    break
            else:
                self._error = StreamError("truncated", "the model stream ended without finishing")
        except Exception as exc:  # a broken iterator must not leave the reply hanging
            log.exception("model stream raised")
            self._error = StreamError("provider", f"the model stream broke: {exc}")
        finally:
            self._end()  # before closing the stream: the writer may go on meanwhile
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await asyncio.shield(closer())

    def _first_token(self, now: float) -> None:
        self._tally.first_token(now)

    def _end(self) -> None:
        self._ended.set()
        self._wake.set()

    # -- writer ----------------------------------------------------------------

    async def _write_until_end(self) -> None:
        clock = self._clock
        while not self._ended.is_set():
            new = self._length + self._reasoning_length - max(self._shown, 0)
            if new <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._shown >= 0:  # the first frame goes out as soon as there is one
                wait = self._pacing.due(clock.now(), self._last_call_end, new)
                if wait > 0:
                    if new < self._pacing.min_chars:
                        self._wake.clear()  # more text may reach the threshold sooner
                        await clock.wait(self._wake, wait)
                    else:
                        await clock.wait(self._ended, wait)
                    continue
            if not await self._deliver(final=False) and not self._ended.is_set():
                self._wake.clear()  # nothing deliverable yet: wait for more
                await self._wake.wait()

    async def _deliver(self, final: bool) -> bool:
        """Send the current text: the final frames of any pages that are complete,
        then the open page (or, when ``final``, the last page with the outcome).
        Returns whether anything was sent.

        Nothing is taken as shown before the sink returns: a failed call leaves
        the reply exactly as it was and the same text goes out again."""
        sent = False
        attempts = 0
        reroutes = 0
        trying_since: float | None = None  # when the current final frame was first tried
        while True:
            if not final and self._ended.is_set():
                return sent  # the final pass carries the text, in one call fewer
            index = self._pages_done
            call, _ = self._plan(index, final)
            if self._routes is not None:
                await self._choose_route(self._routes, call, index)
            waited = await self._acquire(self._sink.scopes(call, index), self._turn(call))
            # Take the newest text only now: everything that came while we waited.
            now_call, pages = self._plan(index, final)
            if now_call is not call or (not final and self._ended.is_set()):
                # The page froze or the stream ended while we waited: what we hold
                # goes to the call that replaces this one.
                self._held.extend(self._sink.scopes(call, index))
                continue
            page_final = call in (SinkCall.CLOSE, SinkCall.FINISH)
            frame = self._frame(index, pages[index], page_final)
            covered, shown = self._coverage(pages[index], frame)
            if not page_final and shown <= self._shown:
                self._held.extend(self._sink.scopes(call, index))
                return sent  # nothing new (or only a tail held back): never send it
            started = self._clock.now()
            if page_final and trying_since is None:
                trying_since = started
            try:
                await self._call(call, index, frame, waited)
            except RateLimited as limited:
                await self._rate_limited(call, index, limited)
                if page_final and self._gave_up(trying_since, attempts):
                    self._undelivered_frame(frame, call)
                    if call is SinkCall.FINISH:
                        return sent
                    attempts, trying_since = 0, None
                continue
            except Reroute as exc:
                reroutes += 1
                log.info("platform call %s takes another route: %s", call.value, exc)
                if reroutes <= MAX_REROUTES:
                    continue
                failure: Exception = exc
            except UserStopped:
                log.info("the user stopped the reply on the platform")
                self.stop("stopped")
                if not final:
                    return sent
                continue
            except MessageGone:
                raise
            except Exception as exc:
                failure = exc
            else:
                self._after_call(call, started, waited)
                self._after_text(covered, shown)
                self._created = max(self._created, index + 1)
                if self._progress is not None:
                    shows = frame.visible if self._append_only else frame.text
                    self._report(index, shows, page_final)
                sent = True
                if not page_final:
                    self._sent = frame.sent + len(frame.delta)
                    return True
                if call is SinkCall.FINISH:
                    return True
                self._pages_done += 1
                self._sent = 0
                attempts, reroutes, trying_since = 0, 0, None
                continue
            # A platform error other than a 429.
            self._tally.sink_error()
            attempts += 1
            log.warning(
                "platform call %s failed: %s",
                call.value,
                failure,
                extra={"error": error_code(failure)},
            )
            if not page_final:
                self._last_call_end = self._clock.now()
                return True  # a later frame will carry this text
            if self._gave_up(trying_since, attempts):
                self._undelivered_frame(frame, call)
                if call is SinkCall.FINISH:
                    return sent
                attempts, reroutes, trying_since = 0, 0, None
                continue
            retry = self._retry
            await self._clock.sleep(min(retry.backoff * 2.0 ** (attempts - 1), retry.max_backoff))

    async def _call(self, call: SinkCall, index: int, frame: Frame | None, waited: float) -> None:
        """Make the sink call ``call`` (``frame`` is None for ``OPEN``), telling a
        ``CallObserver`` what it was and how it ended."""
        calls = self._calls
        if calls is None:
            try:
                await self._send(call, frame)
            except Exception:
                self._report(index, None, False)
                raise
            return
        scopes = self._sink.scopes(call, index)  # before the call: a Reroute changes them
        started = self._clock.now()
        error: str | None = None
        try:
            await self._send(call, frame)
        except Exception as exc:
            error = error_code(exc)
            self._report(index, None, False)
            raise
        except BaseException as exc:
            error = error_code(exc)
            raise
        finally:
            calls.call_attempted(call, scopes, self._clock.now() - started, waited, error)

    def _report(self, index: int, text: str | None, final: bool) -> None:
        """Tell ``progress`` what message ``index`` shows (None: unchanged) and where
        it is now."""
        progress = self._progress
        if progress is None:
            return
        place = self._located.place(index) if self._located is not None else None
        if text is not None or place is not None:
            progress(index, text, final, place)

    def _send(self, call: SinkCall, frame: Frame | None) -> Awaitable[None]:
        if frame is None:
            return self._sink.open()
        if call is SinkCall.FINISH:
            return self._sink.finish(frame, self._outcome())
        return self._sink.render(frame)

    def _plan(self, index: int, final: bool) -> tuple[SinkCall, list[Page]]:
        """Which call message ``index`` needs now, and the pages it was decided on."""
        pages = self._pages(final)
        last = len(pages) - 1
        if final and index == last:
            return SinkCall.FINISH, pages
        if index < last:
            return SinkCall.CLOSE, pages
        return (SinkCall.UPDATE if self._created > index else SinkCall.CREATE), pages

    async def _acquire(self, scopes: Sequence[str], turn: Turn) -> float:
        """Wait for every scope of a call, using slots already held first (from a
        call that was replaced while it waited)."""
        waited = 0.0
        for scope in scopes:
            if scope in self._held:
                self._held.remove(scope)
                continue
            wait = await self._budget.acquire(scope, turn)
            if wait > 0.0 and self._calls is not None:
                self._calls.budget_waited(scope, wait)
            waited += wait
        return waited

    def _turn(self, call: SinkCall) -> Turn:
        """How urgent ``call`` is among the calls waiting for the same scopes."""
        if self._shown < 0:
            return Turn(Urgency.FIRST_TEXT, self._started)
        urgency = Urgency.FINAL if call in (SinkCall.CLOSE, SinkCall.FINISH) else Urgency.UPDATE
        return Turn(urgency, self._last_call_end)

    async def _choose_route(self, routes: RouteChoice, call: SinkCall, index: int) -> None:
        """Take the sink's preferred route for ``call`` only if its scarce slot is
        free now (and keep that slot for the call); else the plentiful route, for
        the rest of the reply."""
        scope = routes.contested_scope(call, index)
        if scope is None or scope in self._held:
            return
        if await self._budget.try_acquire(scope):
            self._held.append(scope)
            return
        log.info("no slot free now in %s: this reply takes the sink's other route", scope)
        routes.fall_back()
        if self._created == 0:  # nothing shown yet: frames may be healed from now on
            self._append_only = self._sink.append_only

    def _coverage(self, page: Page, frame: Frame) -> tuple[int, int]:
        """How far into the model's text the reply is visible once ``frame`` is
        confirmed, and the same plus the reasoning (what "unchanged" compares)."""
        if self._append_only and not frame.final:
            rendered = frame.sent + len(frame.delta)
            covered = min(page.end, page.start + max(0, rendered - len(page.prefix)))
        else:
            covered = page.end
        return covered, covered + self._reasoning_length

    def _gave_up(self, trying_since: float | None, attempts: int) -> bool:
        retry = self._retry
        if attempts >= retry.attempts:
            return True
        return trying_since is not None and self._clock.now() - trying_since >= retry.give_up_after

    def _undelivered_frame(self, frame: Frame, call: SinkCall) -> None:
        """Leave a final frame the platform keeps refusing to whoever finishes the
        reply later (the in-flight registry), and go on with the next message."""
        log.error(
            "could not deliver the final frame of message %d (%s): left for a later retry",
            frame.index,
            call.value,
            extra={"error": "undelivered"},
        )
        self._undelivered.append(frame)
        if call is not SinkCall.FINISH:
            self._pages_done += 1
            self._sent = 0
            self._created = max(self._created, frame.index + 1)

    def _pages(self, final: bool) -> list[Page]:
        # An append-only sink can't take back text: its open page is never cut
        # before what it already showed.
        floor = self._covered if self._append_only else 0
        # The text only grows, so its length names it: a delivery asks twice (before
        # and after its budget wait) and mostly nothing came in between.
        key = (self._length, final, floor)
        if key != self._paged:
            self._paged = key
            self._paged_pages = self._paginator.freeze(self._text(), final, floor)
        return self._paged_pages

    def _frame(self, index: int, page: Page, final: bool) -> Frame:
        rendered = page.render(self._text())
        sent = self._sent
        pending = rendered[sent:]
        if self._append_only:  # appended text can't be taken back: hold back, never heal
            delta = pending[: appendable(pending, final)]
            text = rendered
        else:
            delta = pending
            text = rendered if final else heal(rendered)
        return Frame(
            index=index,
            text=text,
            delta=delta,
            final=final,
            reasoning="".join(self._reasoning) if self._reasoning else "",
            sent=sent,
        )

    def _text(self) -> str:
        parts = self._parts
        if len(parts) > 1:
            joined = "".join(parts)
            parts.clear()
            parts.append(joined)
        return parts[0] if parts else ""

    def _after_call(self, call: SinkCall, started: float, waited: float) -> None:
        now = self._clock.now()
        self._last_call_end = now
        self._tally.call_done(call, now - started, waited)

    def _after_text(self, covered: int, shown: int) -> None:
        """Text up to offset ``covered`` is now visible: account staleness."""
        self._shown = max(self._shown, shown)
        self._covered = max(self._covered, covered)
        self._tally.visible(self._last_call_end, covered, self._arrivals)

    async def _rate_limited(self, call: SinkCall, index: int, limited: RateLimited) -> None:
        scopes = [limited.scope] if limited.scope else list(self._sink.scopes(call, index))
        self._tally.rate_limited(scopes, limited.retry_after)
        for scope in scopes:
            await self._budget.block(scope, limited.retry_after)

    async def _open(self) -> None:
        """Show that a reply is coming, only if that costs no wait: a slot free now
        in every scope the sink names for it. Skipped otherwise, and never retried
        after a 429 (which still blocks its scope): the first text is what users
        wait for, and it must not queue behind an indicator."""
        scopes = self._sink.scopes(SinkCall.OPEN, 0)
        for scope in scopes:
            if not await self._budget.try_acquire(scope):
                log.debug("no slot free now in %s: the reply shows no indicator", scope)
                return
        started = self._clock.now()
        try:
            await self._call(SinkCall.OPEN, 0, None, 0.0)
        except RateLimited as limited:
            await self._rate_limited(SinkCall.OPEN, 0, limited)
            return
        except UserStopped:
            self.stop("stopped")
            return
        except MessageGone:
            raise
        except Exception as exc:  # Reroute included: the first text takes the new route
            self._tally.sink_error()
            log.warning(
                "platform call %s failed: %s",
                SinkCall.OPEN.value,
                exc,
                extra={"error": error_code(exc)},
            )
            return
        self._after_call(SinkCall.OPEN, started, 0.0)
        # A message that exists from the start (a deferred "thinking…" response) is
        # recorded before the first token: a process that dies while the model
        # thinks leaves a record naming it, so it never stays "thinking…".
        self._report(0, None, False)


def error_code(error: BaseException) -> str:
    """What a failed sink call's ``error`` is called in logs and traces."""
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, Reroute):
        return "reroute"
    if isinstance(error, UserStopped):
        return "user_stopped"
    if isinstance(error, MessageGone):
        return "gone"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return type(error).__name__
