"""A sink that records every call and plays a platform: the messages as a user
would see them, 429s and failures on demand. Used with a ``FakeClock``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.clock import Clock
from core.reply.sink import Frame, MessageGone, Outcome, RateLimited, SinkCall


@dataclass
class Call:
    kind: SinkCall
    at: float
    frame: Frame | None
    outcome: Outcome | None = None


@dataclass
class RecordingSink:
    clock: Clock
    limit: int = 2000
    append_only: bool = False
    scope: str = "test:channel"
    latency: float = 0.0
    """Fake seconds each platform call takes."""
    fail: Callable[[Call, int], Exception | None] = lambda call, n: None
    """Decides, per call (and its 0-based number), whether it raises instead."""
    calls: list[Call] = field(default_factory=list)
    messages: dict[int, str] = field(default_factory=dict)
    finals: dict[int, str] = field(default_factory=dict)
    outcome: Outcome | None = None
    attempts: int = 0

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        return (self.scope,)

    async def open(self) -> None:
        await self._platform(Call(SinkCall.OPEN, self.clock.now(), None))

    async def render(self, frame: Frame) -> None:
        kind = SinkCall.UPDATE if frame.index in self.messages else SinkCall.CREATE
        await self._platform(Call(kind, self.clock.now(), frame))
        self._show(frame)

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        await self._platform(Call(SinkCall.FINISH, self.clock.now(), frame, outcome))
        self._show(frame)
        self.outcome = outcome

    async def _platform(self, call: Call) -> None:
        number = self.attempts
        self.attempts += 1
        if self.latency:
            await self.clock.sleep(self.latency)
        error = self.fail(call, number)
        if error is not None:
            raise error
        self.calls.append(call)

    def _show(self, frame: Frame) -> None:
        assert frame.index not in self.finals, (
            f"message {frame.index} changed after its final frame"
        )
        assert frame.index <= len(self.messages), "a message was skipped"
        if self.append_only:
            self.messages[frame.index] = self.messages.get(frame.index, "") + frame.delta
        else:
            self.messages[frame.index] = frame.text
        assert len(self.messages[frame.index]) <= self.limit, "message over the platform limit"
        if frame.final:
            self.finals[frame.index] = self.messages[frame.index]

    def texts(self) -> list[str]:
        return [self.messages[i] for i in sorted(self.messages)]

    def text_calls(self) -> list[Call]:
        return [c for c in self.calls if c.kind is not SinkCall.OPEN]


def rate_limit_on(numbers: set[int], retry_after: float) -> Callable[[Call, int], Exception | None]:
    return lambda call, n: RateLimited(retry_after) if n in numbers else None


def gone_on(number: int) -> Callable[[Call, int], Exception | None]:
    return lambda call, n: MessageGone("404 Unknown Message") if n == number else None
