"""A sink that appends a reply to text streams: stdout for the answer, stderr for
reasoning. It serves ``chatrelay ask`` and the console chat, so both show
exactly what the engine delivers to Slack or Discord, paced the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from core.reply import Frame, MessageGone, Outcome, SinkCall

REASONING_MARK = "[reasoning] "


class TextStreamSink:
    """Append-only: the engine hands it deltas and it writes and flushes them."""

    limit = 1 << 30  # a terminal has no message size: one page
    append_only = True

    def __init__(self, out: TextIO, err: TextIO, *, prefix: str = "") -> None:
        self._out = out
        self._err = err
        self._prefix = prefix
        self._reasoning_shown = 0
        self._reasoning_open = False
        self._text_started = False
        self._last_char = "\n"

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        return ()  # nothing to rate-limit

    async def open(self) -> None:
        return None

    async def render(self, frame: Frame) -> None:
        try:
            self._write(frame)
        except BrokenPipeError as exc:  # ``chatrelay ask … | head``: nobody reads on
            raise MessageGone("the output was closed") from exc

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        try:
            self._write(frame)
            self._end_reasoning()
            if self._text_started and self._last_char != "\n":
                self._out.write("\n")
                self._out.flush()
        except BrokenPipeError as exc:
            raise MessageGone("the output was closed") from exc

    def _write(self, frame: Frame) -> None:
        if len(frame.reasoning) > self._reasoning_shown:
            if self._reasoning_shown == 0:
                self._err.write(REASONING_MARK)
            self._err.write(frame.reasoning[self._reasoning_shown :])
            self._err.flush()
            self._reasoning_shown = len(frame.reasoning)
            self._reasoning_open = True
        if frame.delta:
            self._end_reasoning()
            if not self._text_started:
                self._text_started = True
                self._out.write(self._prefix)
            self._out.write(frame.delta)
            self._out.flush()
            self._last_char = frame.delta[-1]

    def _end_reasoning(self) -> None:
        """End a reasoning run with a newline, so the answer and any error line
        start on their own lines."""
        if self._reasoning_open:
            self._err.write("\n")
            self._err.flush()
            self._reasoning_open = False
