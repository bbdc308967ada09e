"""Instrumentation of one reply: the figures users feel, kept cheap enough to
record for every token.

``ReplyStats`` is always collected (the CLI, tests and benchmarks read it);
a ``ReplyObserver`` additionally receives each figure as it happens, which is
where metrics exporters plug in. An observer that is also a ``CallObserver``
(tracing, ``core.telemetry.tracing``) is told of every platform call attempt and budget
wait too; a plain ``ReplyObserver`` needs none of that.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from core.reply.sink import SinkCall


class ReplyObserver(Protocol):
    def first_token(self, seconds: float) -> None:
        """Seconds from the reply's start to the model's first token."""
        ...

    def first_visible(self, seconds: float) -> None:
        """Seconds from the reply's start to the first completed platform call
        showing model output."""
        ...

    def visible(self, staleness: float) -> None:
        """One text delta became visible ``staleness`` seconds after it arrived."""
        ...

    def platform_call(self, call: SinkCall, seconds: float, budget_wait: float) -> None:
        """A platform call completed; it waited ``budget_wait`` for the budget."""
        ...

    def rate_limited(self, scope: str, retry_after: float) -> None:
        """The platform answered 429 despite the budget."""
        ...


class LLMObserver(Protocol):
    """What ``core.llm.client.LLMClient`` reports about its requests (its
    ``observer``). ``provider`` is ``Provider.label`` (model@host: bounded by the
    configuration); ``reason`` a bounded word (``core.llm.client.error_reason``)."""

    def request(self, provider: str) -> None:
        """A request (a first try, a retry or a fallback) is sent to ``provider``."""
        ...

    def error(self, provider: str, reason: str, started: bool) -> None:
        """A request failed: before its first token (``started`` False: retried or
        passed to the next provider) or after it (the reply fails)."""
        ...

    def fallback(self, provider: str, reason: str) -> None:
        """``provider`` is given up on for the next one of the chain."""
        ...


@runtime_checkable
class CallObserver(Protocol):
    """Optional, beside ``ReplyObserver``: what each platform call was, including
    the ones that failed, and each budget wait. Told once per call, never per
    chunk."""

    def call_attempted(
        self,
        call: SinkCall,
        scopes: Sequence[str],
        seconds: float,
        budget_wait: float,
        error: str | None,
    ) -> None:
        """A sink call in ``scopes`` took ``seconds`` after waiting ``budget_wait``
        for its budget; ``error`` is None when it succeeded, else a short code
        (``rate_limited``, ``reroute``, ``user_stopped``, ``gone``,
        ``cancelled`` or the exception's class)."""
        ...

    def budget_waited(self, scope: str, seconds: float) -> None:
        """A call waited ``seconds`` (more than 0) for a slot in ``scope``; told
        when the wait ends, just before the call."""
        ...


@dataclass(slots=True)
class ReplyStats:
    """Figures of one reply, in seconds; ``None`` where it never happened."""

    first_token: float | None = None
    first_visible: float | None = None
    staleness: array[float] = field(default_factory=lambda: array("d"))
    calls: dict[str, int] = field(default_factory=dict)
    budget_wait: float = 0.0
    rate_limited: int = 0
    sink_errors: int = 0

    @property
    def updates(self) -> int:
        """Platform calls that showed text (creates, updates and the finish)."""
        return sum(n for call, n in self.calls.items() if call != SinkCall.OPEN.value)


class ReplyTally:
    """Keeps one reply's ``ReplyStats`` and tells its observer, so the engine
    only says what happened (a token came, a call ended, text became visible)
    and never does the accounting itself."""

    __slots__ = ("_observer", "_started", "stats")

    def __init__(self, observer: ReplyObserver | None, stats: ReplyStats | None = None) -> None:
        self._observer = observer
        self._started = 0.0
        self.stats = stats if stats is not None else ReplyStats()

    def started(self, now: float) -> None:
        self._started = now

    def first_token(self, now: float) -> None:
        seconds = now - self._started
        self.stats.first_token = seconds
        if self._observer:
            self._observer.first_token(seconds)

    def call_done(self, call: SinkCall, seconds: float, budget_wait: float) -> None:
        calls = self.stats.calls
        calls[call.value] = calls.get(call.value, 0) + 1
        self.stats.budget_wait += budget_wait
        if self._observer:
            self._observer.platform_call(call, seconds, budget_wait)

    def visible(self, now: float, covered: int, arrivals: deque[tuple[int, float]]) -> None:
        """The model's text up to offset ``covered`` became visible at ``now``:
        every delta that arrived up to there (``arrivals``: text length after
        the delta, when it came; consumed here) counts its staleness."""
        stats = self.stats
        observer = self._observer
        if stats.first_visible is None:
            stats.first_visible = now - self._started
            if observer:
                observer.first_visible(stats.first_visible)
        while arrivals and arrivals[0][0] <= covered:
            _, arrived = arrivals.popleft()
            stale = now - arrived
            stats.staleness.append(stale)
            if observer:
                observer.visible(stale)

    def rate_limited(self, scopes: Sequence[str], retry_after: float) -> None:
        self.stats.rate_limited += 1
        if self._observer:
            for scope in scopes:
                self._observer.rate_limited(scope, retry_after)

    def sink_error(self) -> None:
        self.stats.sink_errors += 1


def percentile(values: array[float] | list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]
