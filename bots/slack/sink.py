"""The Slack sink: a reply as one or more thread messages that grow.

Two ways to grow a message, chosen per workspace:

- **native streaming** (``chat.startStream`` → ``appendStream`` → ``stopStream``):
  Slack appends what we send, so the sink is append-only. Streams are closed
  by Slack about five minutes after they start, so a message rolls over to a
  new stream before 4.5 minutes, and a stream found closed
  (``message_not_in_streaming_state``) is recovered with ``chat.update``.
  ``stopped_by_user`` is the user's Stop.
- **post + edit** (``chat.postMessage`` then ``chat.update`` with a
  ``markdown`` block, which avoids the "(edited)" label), for workspaces
  without the streaming API. The first refusal (``feature_not_enabled``,
  ``unknown_method``…) switches the reply over and is remembered for the
  workspace.

Every call is named by its budget scope; a 429 becomes ``RateLimited`` so the
engine blocks the scope for every reply, and a vanished message becomes
``MessageGone``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.format import (
    context,
    fallback_text,
    message_blocks,
    neutralise,
    outcome_note,
)
from core.budget import Budget, acquire_all
from core.clock import Clock, MonotonicClock
from core.markdown import heal
from core.sink import Frame, MessageGone, Outcome, RateLimited, SinkCall

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 11_000
"""Characters of model text per Slack message: under the 12,000 of a markdown
block or a ``markdown_text`` call, with room for the engine's fence closers."""


UNSUPPORTED = frozenset(
    {
        "feature_not_enabled",
        "unknown_method",
        "not_allowed",
        "method_not_supported_for_channel_type",
    }
)
"""Errors meaning this workspace (or channel) can't use native streaming."""

GONE = frozenset(
    {"message_not_found", "channel_not_found", "thread_not_found", "is_archived", "not_in_channel"}
)

_HOLD_BACK = 12
"""Characters at the end of an append that may be held back while they could
still become a mention (``<!chan`` …), so neutralising never misses one."""


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
    ts: str
    native: bool
    started: float
    shown: str = ""  # the model's text this message shows (neutralised when sent)


@dataclass
class SlackReplySink:
    """One reply's sink. ``native`` says whether to try native streaming."""

    client: AsyncWebClient
    target: SlackTarget
    reply_id: str
    budget: Budget
    native: bool = True
    clock: Clock = field(default_factory=MonotonicClock)
    on_user_stop: Callable[[], None] = lambda: None
    on_native_unsupported: Callable[[], Awaitable[None]] | None = None
    on_shown: Callable[[int, str, str], Awaitable[None]] | None = None
    """Called with (index, ts, text) after a message changed: the in-flight record."""
    limit: int = MESSAGE_LIMIT
    rollover_after: float = 270.0
    """Seconds after which a native stream is closed and the message continues in
    a new one: Slack closes streams about 300 s after they start."""
    _messages: list[_Message] = field(default_factory=list)
    _carry: str = ""
    _user_stopped: bool = False

    @property
    def append_only(self) -> bool:
        return self.native

    @property
    def timestamps(self) -> list[str]:
        return [m.ts for m in self._messages]

    # -- budget scopes -------------------------------------------------------

    def _scope(self, method: str) -> str:
        if method == "chat.postMessage":
            return f"slack:{self.target.team}:chat.postMessage:{self.target.channel}"
        return f"slack:{self.target.team}:{method}"

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        return [self._scope(m) for m in self._methods(call, index)]

    def _methods(self, call: SinkCall, index: int) -> tuple[str, ...]:
        exists = index < len(self._messages)
        if call is SinkCall.OPEN:
            status = ("assistant.threads.setStatus",) if self.target.assistant_thread else ()
            first = "chat.startStream" if self._can_stream() else "chat.postMessage"
            return (*status, first)
        if self.native:
            if call is SinkCall.FINISH:
                return ("chat.stopStream",) if exists else ("chat.startStream", "chat.stopStream")
            return ("chat.appendStream",) if exists else ("chat.startStream",)
        return ("chat.update",) if exists else ("chat.postMessage",)

    def _can_stream(self) -> bool:
        # Streams live in threads: a top-level DM reply is posted and edited instead.
        return self.native and self.target.thread_ts is not None

    # -- the Sink protocol ---------------------------------------------------

    async def open(self) -> None:
        if self.target.assistant_thread and self.target.thread_ts:
            await self._api(
                "assistant.threads.setStatus",
                channel_id=self.target.channel,
                thread_ts=self.target.thread_ts,
                status="is thinking…",
            )
        if not self._can_stream():
            self.native = False
        await self._new_message()

    async def render(self, frame: Frame) -> None:
        if self._user_stopped:
            return
        if frame.index >= len(self._messages):
            await self._new_message(frame)
        else:
            message = self._messages[frame.index]
            if message.native:
                await self._append(message, frame.delta, frame.final)
            else:
                await self._edit(message, frame, None)
        await self._report(frame.index)

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        if frame.index >= len(self._messages):
            await self._new_message(frame)
            frame = Frame(frame.index, frame.text, "", True, frame.reasoning)
        message = self._messages[frame.index]
        if message.native and not self._user_stopped:
            await self._stop_stream(message, frame.delta, outcome)
        else:
            if message.native:  # the user stopped the stream: it takes no more text
                message.shown += self._carry + frame.delta
                self._carry = ""
            await self._edit(message, frame, outcome)
        await self._report(frame.index)

    # -- native streaming ----------------------------------------------------

    def _recipients(self) -> dict[str, Any]:
        """Outside DMs Slack needs to know whom a stream is for."""
        if self.target.is_dm:
            return {}
        return {
            "recipient_user_id": self.target.recipient_user,
            "recipient_team_id": self.target.team,
        }

    async def _new_message(self, frame: Frame | None = None) -> None:
        text = frame.delta if frame else ""
        if self._can_stream():
            safe = self._safe_append(text, final=frame is not None and frame.final)
            try:
                response = await self._api(
                    "chat.startStream",
                    channel=self.target.channel,
                    thread_ts=self.target.thread_ts,
                    **({"markdown_text": safe} if safe else {}),
                    **self._recipients(),
                )
            except _Unsupported:
                await self._switch_to_edits()
                self._carry = ""
                # The engine budgeted a stream start; the post it becomes needs its own.
                await acquire_all(self.budget, [self._scope("chat.postMessage")])
            else:
                self._messages.append(_Message(str(response["ts"]), True, self.clock.now(), text))
                return
        frame = frame or Frame(len(self._messages), "", "", False)
        response = await self._api(
            "chat.postMessage",
            channel=self.target.channel,
            thread_ts=self.target.thread_ts,
            text=fallback_text(frame.text),
            blocks=self._blocks(frame.text, frame, None),
        )
        self._messages.append(_Message(str(response["ts"]), False, self.clock.now(), frame.text))

    async def _append(self, message: _Message, delta: str, final: bool) -> None:
        message.shown += delta
        if self.clock.now() - message.started > self.rollover_after:
            await self._roll_over(message, delta, final)
            return
        safe = self._safe_append(delta, final)
        if not safe:
            return
        try:
            await self._api(
                "chat.appendStream", channel=self.target.channel, ts=message.ts, markdown_text=safe
            )
        except _StreamClosed:
            await self._recover(message)
        except _StoppedByUser:
            self._user_stopped = True
            self.on_user_stop()

    async def _stop_stream(self, message: _Message, delta: str, outcome: Outcome) -> None:
        message.shown += delta
        if self.clock.now() - message.started > self.rollover_after:
            await self._roll_over(message, delta, True)
            delta = ""
        safe = self._safe_append(delta, final=True)
        try:
            await self._api(
                "chat.stopStream",
                channel=self.target.channel,
                ts=message.ts,
                **({"markdown_text": safe} if safe else {}),
                blocks=message_blocks("", streaming=False, reply_id=self.reply_id, outcome=outcome),
            )
        except (_StreamClosed, _StoppedByUser):
            message.native = False
            await self._edit(
                message, Frame(self._messages.index(message), message.shown, "", True), outcome
            )

    async def _roll_over(self, message: _Message, delta: str, final: bool) -> None:
        """Close the ageing stream with what it has and continue in a fresh one, so
        Slack never closes it under us; the reader sees two messages, nothing lost."""
        await acquire_all(self.budget, [self._scope("chat.stopStream")])
        with contextlib.suppress(_StreamClosed, _StoppedByUser):
            await self._api("chat.stopStream", channel=self.target.channel, ts=message.ts)
        carried = self._safe_append(delta, final)
        await acquire_all(self.budget, [self._scope("chat.startStream")])
        response = await self._api(
            "chat.startStream",
            channel=self.target.channel,
            thread_ts=self.target.thread_ts,
            **({"markdown_text": carried} if carried else {}),
            **self._recipients(),
        )
        message.ts = str(response["ts"])
        message.started = self.clock.now()
        message.shown = delta

    async def _recover(self, message: _Message) -> None:
        """Slack closed the stream early: show the message's whole text with
        ``chat.update``; its later frames are edits too."""
        message.native = False
        await acquire_all(self.budget, [self._scope("chat.update")])
        await self._edit(
            message, Frame(self._messages.index(message), message.shown, "", False), None
        )

    def _safe_append(self, delta: str, final: bool) -> str:
        """``delta`` neutralised, holding back a tail that could still grow into a
        mention, so a ``<!chan`` + ``nel>`` split across two appends can't ping."""
        text = self._carry + delta
        self._carry = ""
        if not final:
            start = len(text) - _HOLD_BACK
            tail = max(text.rfind("<", start), text.rfind("@", start))
            if tail >= 0 and not any(c.isspace() or c == ">" for c in text[tail:]):
                text, self._carry = text[:tail], text[tail:]
        return neutralise(text)

    # -- post + edit -----------------------------------------------------------

    async def _edit(self, message: _Message, frame: Frame, outcome: Outcome | None) -> None:
        """Replace the message's content: the frame's text, or for a message that
        was streamed natively, what it streamed."""
        text = message.shown if message.native else frame.text
        message.shown = text
        await self._api(
            "chat.update",
            channel=self.target.channel,
            ts=message.ts,
            text=fallback_text(text),
            blocks=self._blocks(text, frame, outcome),
        )

    def _blocks(self, text: str, frame: Frame, outcome: Outcome | None) -> list[dict[str, Any]]:
        streaming = outcome is None and not frame.final
        return message_blocks(
            heal(text) if streaming else text,  # append-only frames come unhealed
            reasoning=frame.reasoning,
            streaming=streaming,
            reply_id=self.reply_id,
            outcome=outcome,
        )

    async def _switch_to_edits(self) -> None:
        log.info("workspace %s has no native streaming: posting and editing", self.target.team)
        self.native = False
        if self.on_native_unsupported is not None:
            await self.on_native_unsupported()

    async def _report(self, index: int) -> None:
        if self.on_shown is not None and index < len(self._messages):
            message = self._messages[index]
            await self.on_shown(index, message.ts, message.shown)

    # -- calls -----------------------------------------------------------------

    async def _api(self, method: str, **params: Any) -> Any:
        try:
            return await self.client.api_call(method, json=params)
        except SlackApiError as exc:
            raise _translate(method, exc, self._scope(method)) from exc


class _Unsupported(Exception):
    pass


class _StreamClosed(Exception):
    pass


class _StoppedByUser(Exception):
    pass


def _translate(method: str, exc: SlackApiError, scope: str) -> Exception:
    response = exc.response
    if response.status_code == 429:
        retry_after = float(
            response.headers.get("Retry-After", response.headers.get("retry-after", 1))
        )
        return RateLimited(retry_after, scope)
    error = str(response.get("error", ""))
    if error in UNSUPPORTED and method.startswith("chat.") and "Stream" in method:
        return _Unsupported(error)
    if error == "message_not_in_streaming_state":
        return _StreamClosed(error)
    if error == "stopped_by_user":
        return _StoppedByUser(error)
    if error in GONE:
        return MessageGone(f"{method}: {error}")
    return exc


async def finalise_orphan(
    client: AsyncWebClient, channel: str, ts: str, text: str, reason: str
) -> None:
    """Give a reply whose replica died its last text and an "interrupted" note."""
    with_note = [context(f"⚠️ {neutralise(reason)}")]
    blocks = ([{"type": "markdown", "text": neutralise(text)}] if text.strip() else []) + with_note
    with contextlib.suppress(SlackApiError):  # not a stream, or already stopped
        await client.api_call("chat.stopStream", json={"channel": channel, "ts": ts})
    await client.api_call(
        "chat.update",
        json={
            "channel": channel,
            "ts": ts,
            "text": fallback_text(text or reason),
            "blocks": blocks,
        },
    )


__all__ = ["SlackReplySink", "SlackTarget", "finalise_orphan", "outcome_note"]
