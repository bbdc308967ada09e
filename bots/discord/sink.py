"""The Discord sink: a reply as one or more messages that grow.

The engine hands over pages of the model's text; this sink shows page *i* as
message *i* of the reply, through an outlet (``bots.discord.api``):

- a mention, reply or auto-reply channel writes channel messages: the first
  replies to the user's message, continuations are silent;
- ``/ask`` writes the deferred original response, then followups. The
  response exists before any text ("thinking…"), so when its id is known it is
  message 0 from the start: recorded in flight as soon as the reply opens, and
  written, or moved, like any other message. Its token dies after 15 minutes,
  so once ``DISCORD_INTERACTION_WINDOW`` has passed (or Discord says the token
  is gone) the message being written **moves** to a channel message, the old
  one points to it, and the reply carries on there.

The message being written carries the Stop button and a "writing…" state; the
final frame of each message removes both, and the last one shows how the
reply ended.

**The sink renders; the engine spends.** ``scopes`` names every call the next
``render``/``finish`` may make, and the engine acquires them all before it
calls; the sink never touches the budget, and ``scopes`` only reads what the
sink holds:

- a write names its outlet's scopes (the channel's and the bot's global one,
  or the interaction's);
- a move names the channel message it creates *and* the note it then writes
  on the old interaction message ("continues here: <link>");
- a note that could not be written yet (a 429 or an error once discord.py's
  own retries were spent) stays owed: every later call names its scope and
  tries it again, and a message's final frame does not succeed while a note is
  owed, so the engine keeps retrying it and, after ``FinalRetry``, leaves it to
  the in-flight registry, whose finaliser writes the note from the ids the
  record carries (``bots.discord.finalise``);
- the move to the channel is decided by a write, never by ``scopes``: a write
  to the interaction that finds ``DISCORD_INTERACTION_WINDOW`` passed switches
  to the channel and raises ``Reroute`` without a call (the time may have come
  while the engine waited for the interaction's budget); nothing was shown, so
  the engine asks ``scopes`` again (now the channel's and the note's) and sends
  the same frame there;
- so does a write Discord answers with a dead token before our deadline; a
  dead token's messages can't be pointed on, so no note is owed then.

**Nothing is recorded before Discord confirms.** ``place`` names only messages
Discord confirmed (for the deferred response: the deferral); the engine
records them with the text it confirmed. A new message id goes to
``on_created`` only once it exists; a call that raises leaves the sink's own
state as it was, except where Discord already applied part of it (a move's
create), which is then what the sink holds, so the retry continues from there
instead of posting twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import discord

from bots.discord.api import ChannelOutlet, InteractionOutlet, Outlet, TokenExpired
from bots.discord.format import (
    Rendered,
    RenderMode,
    message_limit,
    moved_note,
    render,
    stop_view,
)
from bots.discord.limits import GLOBAL_SCOPE
from core.clock import Clock, MonotonicClock
from core.reply import Frame, MessageGone, Outcome, Place, Reroute, SinkCall

log = logging.getLogger(__name__)

OnCreated = Callable[[int], Awaitable[None]]
"""A new message id of the reply."""


@dataclass
class _Message:
    outlet: Outlet
    id: int


@dataclass(frozen=True)
class _Note:
    """An interaction message owed its "this reply continues here" note."""

    outlet: InteractionOutlet
    message_id: int
    index: int
    """The reply's message it points to (the channel message it moved to)."""


class DiscordReplySink:
    def __init__(
        self,
        outlet: Outlet,
        *,
        reply_id: str,
        asker: int,
        mode: RenderMode = "content",
        fallback: ChannelOutlet | None = None,
        deadline: float | None = None,
        clock: Clock | None = None,
        on_created: OnCreated | None = None,
    ) -> None:
        """``fallback`` and ``deadline`` (on ``clock``) serve an interaction outlet:
        where and from when the reply continues once its token is about to die.
        Without a fallback, a dead token ends the reply like a deleted message."""
        self._primary = outlet
        self._fallback = fallback
        self._deadline = deadline
        self._clock = clock or MonotonicClock()
        self.reply_id = reply_id
        self.asker = asker
        self.mode: RenderMode = mode
        self._on_created = on_created
        self._messages: list[_Message] = []
        if isinstance(outlet, InteractionOutlet) and outlet.original_id is not None:
            # The deferred "thinking…" response exists before any text: it is message 0,
            # written (or moved to the channel) like any message that exists.
            self._messages.append(_Message(outlet, outlet.original_id))
        self._notes: list[_Note] = []
        self._expired = False  # the interaction can no longer be written: use the fallback
        self._token_dead = False  # Discord said so: its messages can't even be pointed on

    @property
    def limit(self) -> int:
        return message_limit(self.mode)

    @property
    def append_only(self) -> bool:
        return False

    # -- budget scopes -------------------------------------------------------

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        if call is SinkCall.OPEN:
            # Typing in a channel; an interaction was deferred before the reply began.
            return (GLOBAL_SCOPE,) if isinstance(self._primary, ChannelOutlet) else ()
        scopes = list(self._outlet_for(index).scopes)
        moving = self._moving(index)
        if moving is not None and not self._token_dead:
            scopes += moving.outlet.scopes  # the note on the message it moves from
        for note in self._notes:
            scopes += note.outlet.scopes
        return scopes

    def _window_over(self, outlet: Outlet) -> bool:
        """Whether a write to ``outlet`` must move to the channel first: the
        interaction's window has passed and there is a channel to continue in."""
        return (
            isinstance(outlet, InteractionOutlet)
            and self._fallback is not None
            and self._deadline is not None
            and self._clock.now() >= self._deadline
        )

    def _outlet_for(self, index: int) -> Outlet:
        """Where message ``index`` is written next."""
        outlet = self._messages[index].outlet if index < len(self._messages) else self._primary
        if self._expired and isinstance(outlet, InteractionOutlet) and self._fallback is not None:
            return self._fallback
        return outlet

    def _moving(self, index: int) -> _Message | None:
        """Message ``index`` when its next write moves it to the channel."""
        if index < len(self._messages):
            message = self._messages[index]
            if message.outlet is not self._outlet_for(index):
                return message
        return None

    # -- the Sink protocol ---------------------------------------------------

    async def open(self) -> None:
        if isinstance(self._primary, ChannelOutlet):
            await self._primary.channel.typing()
        elif self._messages:
            # Recorded before the first token: a process that dies while the model
            # thinks leaves a record naming the "thinking…" response, which the
            # finaliser ends (or the next process answers in), so it never stays.
            await self._created(self._messages[0].id)

    async def render(self, frame: Frame) -> None:
        streaming = not frame.final
        shown = render(frame.text, mode=self.mode, streaming=streaming, reasoning=frame.reasoning)
        await self._write(frame.index, frame.text, shown, streaming)

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        shown = render(frame.text, mode=self.mode, streaming=False, outcome=outcome)
        await self._write(frame.index, frame.text, shown, streaming=False)

    # -- writing ---------------------------------------------------------------

    async def _write(self, index: int, text: str, shown: Rendered, streaming: bool) -> None:
        outlet = self._outlet_for(index)
        if self._window_over(outlet):
            # The scopes the engine acquired were the interaction's: switch, and have
            # the frame sent again through the channel's (see the module docstring).
            self._expired = True
            raise Reroute("the interaction's window is over: continuing in the channel")
        view = stop_view(self.reply_id, self.asker) if streaming else None
        try:
            if self._moving(index) is not None:
                await self._move(index, shown, view)
            elif index < len(self._messages):
                await outlet.edit(self._messages[index].id, shown, view)
            else:
                message_id = await self._create(outlet, index, shown, view)
                self._messages.append(_Message(outlet, message_id))
                await self._created(message_id)
        except TokenExpired as exc:
            self._token_died()
            raise Reroute("the interaction token is dead: continuing in the channel") from exc
        failure = await self._write_notes()
        if failure is not None and not streaming:
            # A message's final frame is not done while a note is owed: the engine
            # retries it (the edit again, harmlessly) and at last leaves it, with the
            # ids of the note's message, to the in-flight registry.
            raise failure

    async def _create(
        self, outlet: Outlet, index: int, shown: Rendered, view: discord.ui.View | None
    ) -> int:
        first = not any(m.outlet is outlet for m in self._messages)
        if first and outlet is self._fallback and index > 0:
            self._fallback.continue_from(self._messages[index - 1].id)
        return await outlet.create(shown, view, first=first)

    async def _move(self, index: int, shown: Rendered, view: discord.ui.View | None) -> None:
        """Continue message ``index`` (an interaction message) as a channel message:
        post it there whole, replying to the old one, which then owes a note
        pointing to the new one (unless its token is already dead)."""
        fallback = self._need_fallback()
        old = self._messages[index]
        fallback.continue_from(old.id)
        message_id = await fallback.create(shown, view, first=True)
        self._messages[index] = _Message(fallback, message_id)
        if not self._token_dead and isinstance(old.outlet, InteractionOutlet):
            self._notes.append(_Note(old.outlet, old.id, index))
        log.info("reply %s continues in channel message %s", self.reply_id, message_id)
        await self._created(message_id)

    async def _write_notes(self) -> Exception | None:
        """Write the notes owed; returns the first failure (the note stays owed)."""
        failure: Exception | None = None
        for note in list(self._notes):
            url = self._need_fallback().jump_url(self._messages[note.index].id)
            try:
                await note.outlet.edit(note.message_id, moved_note(url), None)
            except (TokenExpired, MessageGone) as exc:
                log.info("reply %s: its first message can't point on: %s", self.reply_id, exc)
            except Exception as exc:  # a 429 or an error discord.py's retries didn't cure
                log.warning("reply %s: the moved note failed, owed still: %s", self.reply_id, exc)
                failure = failure or exc
                continue
            self._notes.remove(note)
        return failure

    def _token_died(self) -> None:
        """Discord says the token is dead (before our deadline): every later call
        goes to the channel, and nothing can be written with the token any more."""
        self._need_fallback()
        log.info("the interaction of reply %s expired: continuing in the channel", self.reply_id)
        self._expired = self._token_dead = True
        self._notes.clear()

    def _need_fallback(self) -> ChannelOutlet:
        if self._fallback is None:
            raise MessageGone("the interaction expired and the channel can't be written")
        return self._fallback

    async def _created(self, message_id: int) -> None:
        if self._on_created is not None:
            await self._on_created(message_id)

    def place(self, index: int) -> Place | None:
        """Where message ``index`` is, plus the ids of an interaction message still
        owed its note, so a finaliser never has to guess."""
        if index >= len(self._messages):
            return None
        message = self._messages[index]
        target = {**message.outlet.target(message.id), "render": self.mode}
        for note in self._notes:
            if note.index == index:
                target.update(_moved_from(note))
        return target


def _moved_from(note: _Note) -> dict[str, str]:
    """The ids of the interaction message that must still point to ``note.index``."""
    source = note.outlet.target(note.message_id)
    return {
        "from_app": source["app"],
        "from_token": source["token"],
        "from_message": source["message"],
    }


__all__ = ["DiscordReplySink"]
