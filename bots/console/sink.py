"""A sink that shows a reply in a terminal with rich's ``Live``: the engine paces
and heals, this sink only redraws.

It is replace-style (``append_only = False``): every frame carries the whole
answer so far, healed so half-written Markdown (an open code fence, a dangling
``**``) renders sanely, and the sink redraws it as Markdown, at the engine's
pacing rather than per token. Until the first token a spinner turns; it is the
only thing redrawn on a timer of the sink's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from rich.console import Console
from rich.live import Live

from bots.console.view import ReplyView
from core.reply import Frame, Outcome, SinkCall

SPIN_INTERVAL = 0.1
"""Seconds between two frames of the thinking spinner."""


class LiveSink:
    limit = 1 << 30  # a terminal has no message size: one page
    append_only = False

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live: Live | None = None
        self._spinner: asyncio.Task[None] | None = None
        self.view = ReplyView()
        """What the reply shows now (tests read it)."""

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        return ()  # nothing to rate-limit

    async def open(self) -> None:
        self._show(ReplyView())
        self._spinner = asyncio.create_task(self._spin())

    async def render(self, frame: Frame) -> None:
        self._show(ReplyView(frame.text, frame.reasoning))

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        self._show(ReplyView(frame.text, frame.reasoning, final=True))
        self.close()

    def close(self) -> None:
        """Stop redrawing; the last view stays printed. Safe to call twice."""
        self._stop_spinner()
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    def _show(self, view: ReplyView) -> None:
        self.view = view
        if view.text or view.reasoning or view.final:
            self._stop_spinner()
        if self._live is None:
            if view.final:  # nothing was live: print the reply once
                self._console.print(view.renderable())
                return
            self._live = Live(
                console=self._console,
                auto_refresh=False,  # redrawn when a frame comes, and by the spinner
                vertical_overflow="visible",  # the view itself keeps to the screen
            )
            self._live.start()
        self._live.update(view.renderable(), refresh=True)

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.cancel()
            self._spinner = None

    async def _spin(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while self._live is not None:
                await asyncio.sleep(SPIN_INTERVAL)
                if self._live is not None:
                    self._live.refresh()
