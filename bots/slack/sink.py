"""The Slack sink: a reply as one or more thread messages that grow.

Two ways to grow a message, chosen per reply:

- **native streaming** (``chat.startStream`` → ``appendStream`` → ``stopStream``):
  Slack appends what we send, so the sink is append-only. Every message of a
  long reply is stopped when its page is complete. Slack closes a stream about
  five minutes after it starts, so a message rolls over to a new stream before
  that (``rollover_after``); a stream found closed
  (``message_not_in_streaming_state``) is recovered with ``chat.update``, and
  ``stopped_by_user`` is the user's Stop.
- **post + edit** (``chat.postMessage`` then ``chat.update`` with a
  ``markdown`` block, which avoids the "(edited)" label), for workspaces
  without the streaming API. The first refusal (``feature_not_enabled``,
  ``unknown_method``…) switches the reply over and is remembered for the
  workspace. And for one reply when no ``chat.startStream`` slot is free at the
  moment its first message would start (``RouteChoice``): Slack allows about
  20 starts a minute per workspace, so in a busy channel the 21st reply posts
  its first text at once instead of waiting up to a minute for a stream.

The sink only renders. The engine decides what text to send (and holds back a
tail that could still become a mention), acquires the budget of every call the
sink names in ``scopes`` (a roll-over names both of its calls), and counts text
as shown only once the sink returns. The sink records a message's state only
after Slack confirmed a call, so a failed call leaves it exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.api import StoppedByUser, StreamClosed, Unsupported, call
from bots.slack.format import fallback_text, message_blocks
from bots.slack.limits import scope, scopes
from core.clock import Clock, MonotonicClock
from core.reply import Frame, Outcome, Place, Reroute, SinkCall, UserStopped, heal

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 11_000
"""Characters of model text per Slack message: under the 12,000 of a markdown
block or a ``markdown_text`` call, with room for the engine's fence closers."""

STREAM_BYTES = 10_000
"""UTF-8 bytes one streamed message takes before it rolls over to a new stream.
Slack documents no cap, but other bots report appends failing from about
10.6k bytes (openclaw, CopilotKit); multi-byte text reaches that well within
``MESSAGE_LIMIT`` characters."""


@dataclass(frozen=True, slots=True)
class SlackTarget:
    """Where a reply goes."""

    team: str
    channel: str
    thread_ts: str | None
    recipient_user: str | None = None
    assistant_thread: bool = False

    @property
    def is_dm(self) -> bool:
        return self.channel.startswith("D")


@dataclass
class _Message:
    """One page of the reply as Slack holds it. Changed only after Slack confirmed."""

    ts: str
    native: bool
    """A stream we append to; False for posted messages and streams that ended."""
    started: float
    offset: int = 0
    """Where this Slack message starts in the page's text (after a roll-over)."""
    upto: int = 0
    """How much of the page's text Slack confirmed showing, in page offsets."""
    closed: bool = False
    """Its stream was stopped for a roll-over and the next one isn't started yet."""
    bytes: int = 0
    """UTF-8 bytes Slack confirmed in the current stream (since the last roll-over)."""
    full: bool = False
    """The next piece would pass ``STREAM_BYTES``: roll over instead of appending."""
    streamed: bool = field(init=False)
    """Started as a stream, which Slack may still hold open whatever we last
    heard (a refused append does not close it): a finaliser stops it before it
    edits (stopping an ended stream is harmless)."""

    def __post_init__(self) -> None:
        self.streamed = self.native


@dataclass
class SlackReplySink:
    """One reply's sink. ``native`` says whether to try native streaming."""

    client: AsyncWebClient
    target: SlackTarget
    reply_id: str
    native: bool = True
    clock: Clock = field(default_factory=MonotonicClock)
    on_native_unsupported: Callable[[], Awaitable[None]] | None = None
    limit: int = MESSAGE_LIMIT
    rollover_after: float = 270.0
    """Seconds after which a native stream is closed and the message continues in
    a new one: Slack closes streams about 300 s after they start."""
    _messages: list[_Message] = field(default_factory=list)

    @property
    def append_only(self) -> bool:
        return self.native

    @property
    def timestamps(self) -> list[str]:
        return [m.ts for m in self._messages]

    # -- budget scopes: one per call the sink will make --------------------------

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        team, channel = self.target.team, self.target.channel
        return [s for method in self._methods(call, index) for s in scopes(team, method, channel)]

    def _methods(self, call: SinkCall, index: int) -> tuple[str, ...]:
        if call is SinkCall.OPEN:
            return ("assistant.threads.setStatus",) if self._shows_status() else ()
        closing = call in (SinkCall.CLOSE, SinkCall.FINISH)
        if index >= len(self._messages):
            if not self._can_stream():
                return ("chat.postMessage",)
            return ("chat.startStream", "chat.stopStream") if closing else ("chat.startStream",)
        message = self._messages[index]
        if not message.native:
            return ("chat.update",)
        if message.closed:
            return ("chat.startStream", "chat.stopStream") if closing else ("chat.startStream",)
        if closing:
            if message.full:
                return ("chat.stopStream", "chat.startStream", "chat.stopStream")
            return ("chat.stopStream",)
        if self._ageing(message) or message.full:
            return ("chat.stopStream", "chat.startStream")
        return ("chat.appendStream",)

    # -- the route of a new message (core.reply.sink.RouteChoice) ----------------------

    def contested_scope(self, call: SinkCall, index: int) -> str | None:
        """``chat.startStream``'s scope when ``call`` would start the stream of a
        new message. (A stream restarted after a roll-over waits for its slot:
        its message already shows text, and it is rare.)"""
        if call is SinkCall.OPEN or index < len(self._messages) or not self._can_stream():
            return None
        return scope(self.target.team, "chat.startStream", self.target.channel)

    def fall_back(self) -> None:
        """Post and edit for the rest of this reply (the workspace keeps streaming)."""
        self.native = False

    def _can_stream(self) -> bool:
        # Streams live in threads: a top-level DM reply is posted and edited instead.
        return self.native and self.target.thread_ts is not None

    def _shows_status(self) -> bool:
        # In any thread: a mention's as well as an assistant thread (setStatus
        # takes chat:write since 2026-03).
        return self.target.thread_ts is not None

    def _ageing(self, message: _Message) -> bool:
        return self.clock.now() - message.started > self.rollover_after

    # -- the Sink protocol ---------------------------------------------------

    async def open(self) -> None:
        """Show "is thinking…" under the thread: cheap, generous, and cleared by
        Slack when the reply's first message appears. No placeholder message: the
        first message carries the first text, instead of costing an edit later.
        The engine calls it only when its budget has a slot free now, and never
        retries it: a 429 on the status skips the status, never delays the text."""
        if not self._shows_status() or self._messages:
            return
        await self._api(
            "assistant.threads.setStatus",
            channel_id=self.target.channel,
            thread_ts=self.target.thread_ts,
            status="is thinking…",
        )

    async def render(self, frame: Frame) -> None:
        await self._show(frame, None)

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        await self._show(frame, outcome)

    async def _show(self, frame: Frame, outcome: Outcome | None) -> None:
        closing = frame.final or outcome is not None
        if frame.index >= len(self._messages):
            await self._create(frame, outcome)
        else:
            message = self._messages[frame.index]
            if not message.native:
                await self._edit(message, frame, outcome)
            elif message.closed:
                await self._restart(message, frame, outcome)
            elif message.full:
                await self._roll_over(message, frame, outcome)
            elif closing:
                await self._stop(message, frame, outcome)
            elif self._ageing(message):
                await self._roll_over(message, frame, None)
            else:
                await self._append(message, frame)

    # -- native streaming ----------------------------------------------------

    def _recipients(self) -> dict[str, Any]:
        """Outside DMs Slack needs to know whom a stream is for."""
        if self.target.is_dm:
            return {}
        return {
            "recipient_user_id": self.target.recipient_user,
            "recipient_team_id": self.target.team,
        }

    async def _create(self, frame: Frame, outcome: Outcome | None) -> None:
        if not self._can_stream():
            await self._post(frame, outcome)
            return
        end = _end(frame)
        piece = frame.text[:end]
        try:
            response = await self._api(
                "chat.startStream",
                channel=self.target.channel,
                thread_ts=self.target.thread_ts,
                **({"markdown_text": piece} if piece else {}),
                **self._recipients(),
            )
        except Unsupported as exc:
            await self._switch_to_edits()
            raise Reroute(f"no native streaming in this workspace ({exc})") from exc
        message = _Message(
            str(response["ts"]), True, self.clock.now(), upto=end, bytes=_size(piece)
        )
        self._messages.append(message)
        if frame.final or outcome is not None:
            await self._stop(message, frame, outcome)

    async def _append(self, message: _Message, frame: Frame) -> None:
        end = _end(frame)
        piece = frame.text[message.upto : end]
        if not piece:
            return
        self._check_size(message, piece)
        await self._stream_call(
            message,
            "chat.appendStream",
            channel=self.target.channel,
            ts=message.ts,
            markdown_text=piece,
        )
        message.upto = end
        message.bytes += _size(piece)

    async def _stop(self, message: _Message, frame: Frame, outcome: Outcome | None) -> None:
        """Stop the stream with the rest of the page (and, on the reply's last
        message, its ending): the message is final and shows no Stop anywhere."""
        end = len(frame.text)
        piece = frame.text[message.upto : end]
        self._check_size(message, piece)
        blocks = message_blocks("", streaming=False, reply_id=self.reply_id, outcome=outcome)
        await self._stream_call(
            message,
            "chat.stopStream",
            channel=self.target.channel,
            ts=message.ts,
            **({"markdown_text": piece} if piece else {}),
            **({"blocks": blocks} if blocks else {}),
        )
        message.upto = end
        message.native = False

    async def _roll_over(self, message: _Message, frame: Frame, outcome: Outcome | None) -> None:
        """Close an ageing or full stream with what it has and continue in a fresh
        one, so Slack never closes or refuses it under us; the reader sees two
        messages, nothing lost. Each step is recorded once confirmed, so a 429 on
        the second call resumes at the second call."""
        await self._stream_call(
            message, "chat.stopStream", channel=self.target.channel, ts=message.ts
        )
        message.closed = True
        message.full = False
        await self._restart(message, frame, outcome)

    async def _restart(self, message: _Message, frame: Frame, outcome: Outcome | None) -> None:
        """Start the stream that continues a rolled-over message."""
        end = len(frame.text) if frame.final or outcome is not None else _end(frame)
        piece = frame.text[message.upto : end]
        response = await self._api(
            "chat.startStream",
            channel=self.target.channel,
            thread_ts=self.target.thread_ts,
            **({"markdown_text": piece} if piece else {}),
            **self._recipients(),
        )
        message.ts = str(response["ts"])
        message.offset, message.upto = message.upto, end
        message.started = self.clock.now()
        message.closed = False
        message.bytes = _size(piece)
        if frame.final or outcome is not None:
            await self._stop(message, frame, outcome)

    def _check_size(self, message: _Message, piece: str) -> None:
        """Before a piece would take the stream past ``STREAM_BYTES``: mark it full,
        so the engine asks ``scopes`` again and the piece goes out in a new stream."""
        if message.bytes and message.bytes + _size(piece) > STREAM_BYTES:
            message.full = True
            raise Reroute("the stream is near Slack's size cap: rolling over")

    async def _stream_call(self, message: _Message, method: str, **params: Any) -> None:
        """A call on a live stream; its two endings are Slack's to tell."""
        try:
            await self._api(method, **params)
        except StreamClosed as exc:
            # Slack closed the stream (about five minutes in): from now on the
            # message is edited, and this frame goes out as an edit.
            message.native = False
            message.closed = False
            raise Reroute(f"{method}: the stream was closed by Slack") from exc
        except StoppedByUser as exc:
            message.native = False
            message.closed = False
            raise UserStopped() from exc

    # -- post + edit -----------------------------------------------------------

    async def _post(self, frame: Frame, outcome: Outcome | None) -> None:
        text = frame.text
        response = await self._api(
            "chat.postMessage",
            channel=self.target.channel,
            thread_ts=self.target.thread_ts,
            text=fallback_text(text),
            blocks=self._blocks(text, frame, outcome),
        )
        self._messages.append(
            _Message(str(response["ts"]), False, self.clock.now(), upto=len(text))
        )

    async def _edit(self, message: _Message, frame: Frame, outcome: Outcome | None) -> None:
        """Replace the message's content with its part of the page."""
        text = frame.text[message.offset :]
        await self._api(
            "chat.update",
            channel=self.target.channel,
            ts=message.ts,
            text=fallback_text(text),
            blocks=self._blocks(text, frame, outcome),
        )
        message.upto = len(frame.text)

    def _blocks(self, text: str, frame: Frame, outcome: Outcome | None) -> list[dict[str, Any]]:
        streaming = outcome is None and not frame.final
        return message_blocks(
            heal(text) if streaming else text,  # append-only frames come unhealed
            reasoning=frame.reasoning,
            streaming=streaming,
            reply_id=self.reply_id,
            outcome=outcome,
            asker=self.target.recipient_user or "",
        )

    async def _switch_to_edits(self) -> None:
        log.info("workspace %s has no native streaming: posting and editing", self.target.team)
        self.native = False
        if self.on_native_unsupported is not None:
            await self.on_native_unsupported()

    def place(self, index: int) -> Place | None:
        """Where message ``index`` is: its ts, where in the page its text starts
        (a rolled-over stream continues the page), and whether it was streamed
        (a finaliser stops a stream before it edits)."""
        if index >= len(self._messages):
            return None
        message = self._messages[index]
        return {
            "team": self.target.team,
            "channel": self.target.channel,
            "ts": message.ts,
            "offset": str(message.offset),
            "stream": "1" if message.streamed else "",
        }

    # -- calls -----------------------------------------------------------------

    async def _api(self, method: str, **params: Any) -> Any:
        return await call(self.client, self.target.team, method, self.target.channel, params)


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _end(frame: Frame) -> int:
    """Where in the page text the engine wants this message to reach now: all of
    it on a final frame, else what it already had plus the delta it sent."""
    return len(frame.text) if frame.final else frame.sent + len(frame.delta)


__all__ = ["MESSAGE_LIMIT", "SlackReplySink", "SlackTarget"]
