"""What became of each message an adapter received: answered, ignored, a
duplicate another process took, handed over to the next process.

A message that gets no reply looks the same from outside whether the bot
decided so or has not got to it yet. The intake log tells the two apart: every
message event counts as ``received`` when its handler starts, and gets exactly
one outcome when the handler is done with it. Metrics count the outcomes
(``on_outcome``); anyone who must know that a message was dealt with (a test
asserting "no reply", an operator reading the counts) waits for its outcome
instead of guessing how long handling takes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # prometheus_client is for ``chatrelay run`` only
    from core.telemetry.metrics import ChatrelayMetrics

Outcome = Literal["ignored", "deduplicated", "answered", "handed_over", "failed"]
"""``ignored``: not for the bot (not addressed to it, a bot, blocked, a channel it
can't write in, a conversation an agent took over); ``deduplicated``: another
process (or an earlier delivery) claimed it; ``answered``: a reply (or the
bot's "I'm back") was delivered; ``handed_over``: left to the next process of
its platform (draining); ``failed``: the handler raised."""

OUTCOMES: tuple[Outcome, ...] = ("ignored", "deduplicated", "answered", "handed_over", "failed")

RECENT = 1000
"""Message ids whose outcome is kept for ``outcome``/``wait``; the oldest go first."""


_RECEIVED: ContextVar[float | None] = ContextVar("chatrelay_event_received", default=None)


def event_received_at() -> float | None:
    """When the platform event this task handles reached the process (wall clock,
    set by ``IntakeLog.received``), so a reply's trace starts at the event, not
    when the responder got to it; None outside an event's handling."""
    return _RECEIVED.get()


class IntakeLog:
    def __init__(
        self, on_outcome: Callable[[Outcome], None] | None = None, keep: int = RECENT
    ) -> None:
        self.counts: Counter[str] = Counter()
        """``received`` and each outcome, since the bot started."""
        self._on_outcome = on_outcome
        self._on_received: Callable[[], None] | None = getattr(on_outcome, "received", None)
        """``on_outcome.received``, when it has one (``IntakeMetrics``)."""
        self._keep = keep
        self._recent: OrderedDict[Hashable, Outcome] = OrderedDict()
        self._received: OrderedDict[Hashable, None] = OrderedDict()
        self._waiters: dict[Hashable, asyncio.Event] = {}

    def received(self, message_id: Hashable) -> None:
        """A handler starts on message ``message_id``."""
        _RECEIVED.set(time.time())
        self.counts["received"] += 1
        if self._on_received is not None:
            self._on_received()
        self._received[message_id] = None
        while len(self._received) > self._keep:
            self._received.popitem(last=False)

    async def handle(self, message_id: Hashable, handling: Awaitable[Outcome]) -> Outcome:
        """Count message ``message_id`` as received, run its handling, and settle
        it with the outcome (``failed`` if the handling raised)."""
        self.received(message_id)
        outcome: Outcome = "failed"
        try:
            outcome = await handling
        finally:
            self.settle(message_id, outcome)
        return outcome

    def taken(self, message_id: Hashable) -> bool:
        """Whether a handler of this process already took message ``message_id``
        (recently): a catch-up leaves it alone."""
        return message_id in self._received

    def settle(self, message_id: Hashable, outcome: Outcome) -> None:
        """The handler is done with message ``message_id``."""
        self.counts[outcome] += 1
        self._recent[message_id] = outcome
        self._recent.move_to_end(message_id)
        while len(self._recent) > self._keep:
            self._recent.popitem(last=False)
        waiter = self._waiters.pop(message_id, None)
        if waiter is not None:
            waiter.set()
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    def outcome(self, message_id: Hashable) -> Outcome | None:
        return self._recent.get(message_id)

    async def wait(self, message_id: Hashable) -> Outcome:
        """The outcome of message ``message_id``, once it has one (bound it with a
        timeout: a message this process never receives has none)."""
        while (found := self._recent.get(message_id)) is None:
            waiter = self._waiters.setdefault(message_id, asyncio.Event())
            await waiter.wait()
        return found


class IntakeMetrics:
    """``on_outcome`` for ``IntakeLog`` that counts in ``metrics``: each message
    received in ``chatrelay_messages_received_total{platform}`` and each outcome
    in ``chatrelay_messages_total{platform,outcome}``."""

    def __init__(self, metrics: ChatrelayMetrics, platform: str) -> None:
        self._metrics = metrics
        self._platform = platform

    def __call__(self, outcome: Outcome) -> None:
        self._metrics.messages.inc(self._platform, outcome)

    def received(self) -> None:
        self._metrics.messages_received.inc(self._platform)


def outcome_metric(metrics: ChatrelayMetrics, platform: str) -> IntakeMetrics:
    """``on_outcome`` for ``IntakeLog``, counting in ``metrics`` (any number of
    adapters of a process share the counters)."""
    return IntakeMetrics(metrics, platform)
