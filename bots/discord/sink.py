"""The Discord sink: a reply as one or more messages that grow.

The engine hands over pages of the model's text; this sink shows page *i* as
message *i* of the reply, through an outlet (``bots.discord.outlets``):

- a mention, reply or auto-reply channel writes channel messages: the first
  replies to the user's message, continuations are silent;
- ``/ask`` writes the deferred original response, then followups. Its token
  dies after 15 minutes, so once ``DISCORD_INTERACTION_WINDOW`` has passed (or
  Discord says the token is gone) the message being written moves to a
  channel message, the old one points to it, and the reply carries on there.

The message being written carries the Stop button and a "writing…" state; the
final frame of each message removes both, and the last one shows how the
reply ended. Each write reports the message to the in-flight record (so a
replica can finish it if this process dies) and each new message to
``on_created`` (so replies to it continue the conversation).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import discord

from bots.discord.controls import stop_view
from bots.discord.format import Rendered, RenderMode, message_limit, moved_note, render
from bots.discord.outlets import ChannelOutlet, InteractionOutlet, Outlet, TokenExpired
from bots.discord.ratelimits import GLOBAL_SCOPE, channel_scope, interaction_scope
from core.budget import Budget, acquire_all
from core.clock import Clock, MonotonicClock
from core.sink import Frame, MessageGone, Outcome, SinkCall

log = logging.getLogger(__name__)

OnShown = Callable[[int, Mapping[str, str], str], Awaitable[None]]
"""(message index, its target ids, the page text it shows): the in-flight record."""
OnCreated = Callable[[int], Awaitable[None]]
"""A new message id of the reply."""


@dataclass
class _Message:
    outlet: Outlet
    id: int


class DiscordReplySink:
    def __init__(
        self,
        outlet: Outlet,
        *,
        reply_id: str,
        asker: int,
        budget: Budget,
        mode: RenderMode = "content",
        fallback: ChannelOutlet | None = None,
        deadline: float | None = None,
        clock: Clock | None = None,
        on_shown: OnShown | None = None,
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
        self._budget = budget
        self.mode: RenderMode = mode
        self._on_shown = on_shown
        self._on_created = on_created
        self._messages: list[_Message] = []
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
        # The switch away from the interaction is decided here, before the engine
        # acquires budget for the call, so the call spends the scopes it was granted.
        if not self._expired and self._deadline is not None and self._fallback is not None:
            self._expired = self._clock.now() >= self._deadline
        return self._outlet_for(index).scopes

    def _outlet_for(self, index: int) -> Outlet:
        """Where message ``index`` is written next."""
        outlet = self._messages[index].outlet if index < len(self._messages) else self._primary
        if self._expired and isinstance(outlet, InteractionOutlet) and self._fallback is not None:
            return self._fallback
        return outlet

    # -- the Sink protocol ---------------------------------------------------

    async def open(self) -> None:
        if isinstance(self._primary, ChannelOutlet):
            await self._primary.channel.typing()

    async def render(self, frame: Frame) -> None:
        streaming = not frame.final
        shown = render(frame.text, mode=self.mode, streaming=streaming, reasoning=frame.reasoning)
        await self._write(frame.index, frame.text, shown, streaming)

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        shown = render(frame.text, mode=self.mode, streaming=False, outcome=outcome)
        await self._write(frame.index, frame.text, shown, streaming=False)

    # -- writing ---------------------------------------------------------------

    async def _write(self, index: int, text: str, shown: Rendered, streaming: bool) -> None:
        view = stop_view(self.reply_id, self.asker) if streaming else None
        outlet = self._outlet_for(index)
        if index < len(self._messages):
            message = self._messages[index]
            if message.outlet is not outlet:
                await self._move(index, text, shown, view)
                return
            await self._report(index, message, text)
            try:
                await outlet.edit(message.id, shown, view)
            except TokenExpired:
                await self._token_died()
                await self._move(index, text, shown, view)
            return
        try:
            message_id = await self._create(outlet, index, shown, view)
        except TokenExpired:
            await self._token_died()
            outlet = self._need_fallback()
            message_id = await self._create(outlet, index, shown, view)
        self._messages.append(_Message(outlet, message_id))
        await self._created(index, text)

    async def _create(
        self, outlet: Outlet, index: int, shown: Rendered, view: discord.ui.View | None
    ) -> int:
        first = not any(m.outlet is outlet for m in self._messages)
        if first and outlet is self._fallback and index > 0:
            self._fallback.continue_from(self._messages[index - 1].id)
        return await outlet.create(shown, view, first=first)

    async def _move(
        self, index: int, text: str, shown: Rendered, view: discord.ui.View | None
    ) -> None:
        """Continue message ``index`` (an interaction message) as a channel message:
        post it there whole, replying to the old one, then make the old one point to
        the new (unless the token is already dead)."""
        fallback = self._need_fallback()
        old = self._messages[index]
        fallback.continue_from(old.id)
        message_id = await fallback.create(shown, view, first=True)
        self._messages[index] = _Message(fallback, message_id)
        await self._created(index, text)
        log.info("reply %s continues in channel message %s", self.reply_id, message_id)
        if not self._token_dead:
            with contextlib.suppress(TokenExpired, MessageGone, discord.HTTPException):
                await acquire_all(self._budget, old.outlet.scopes)
                await old.outlet.edit(old.id, moved_note(fallback.jump_url(message_id)), None)

    async def _token_died(self) -> None:
        """Discord says the token is dead (before our deadline): move now, paying for
        the channel call the engine did not budget."""
        log.info("the interaction of reply %s expired: continuing in the channel", self.reply_id)
        self._expired = self._token_dead = True
        await acquire_all(self._budget, self._need_fallback().scopes)

    def _need_fallback(self) -> ChannelOutlet:
        if self._fallback is None:
            raise MessageGone("the interaction expired and the channel can't be written")
        return self._fallback

    async def _created(self, index: int, text: str) -> None:
        message = self._messages[index]
        if self._on_created is not None:
            await self._on_created(message.id)
        await self._report(index, message, text)

    async def _report(self, index: int, message: _Message, text: str) -> None:
        """Record what message ``index`` shows before it is edited (after it is
        created), so a finaliser never shows less than the user saw."""
        if self._on_shown is not None:
            target = {**message.outlet.target(message.id), "render": self.mode}
            await self._on_shown(index, target, text)


async def finalise_orphan(
    client: discord.Client, budget: Budget, target: Mapping[str, str], text: str, reason: str
) -> None:
    """Give a reply whose process died its last text and an "interrupted" state.

    Channel messages can always be edited; an interaction's messages only while
    its token lives, and a dead token or a deleted message means there is
    nothing left to fix (the registry then drops the record)."""
    mode: RenderMode = "embeds" if target.get("render") == "embeds" else "content"
    shown = render(text, mode=mode, streaming=False, outcome=Outcome("interrupted", reason))
    message_id = int(target["message"])
    interaction = target.get("kind") == "interaction"
    if interaction:
        await budget.acquire(interaction_scope(target["token"]))
    else:
        await acquire_all(budget, (channel_scope(int(target["channel"])), GLOBAL_SCOPE))
    try:
        if interaction:
            webhook = discord.Webhook.partial(int(target["app"]), target["token"], client=client)
            await webhook.edit_message(
                message_id,
                content=shown.content,
                embed=shown.embed,
                view=None,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        else:
            channel = client.get_partial_messageable(int(target["channel"]))
            await channel.get_partial_message(message_id).edit(
                content=shown.content,
                embed=shown.embed,
                view=None,
                allowed_mentions=discord.AllowedMentions.none(),
            )
    except (discord.NotFound, discord.Forbidden) as exc:
        log.info("orphaned reply message %s can't be finished: %s", message_id, exc)


__all__ = ["DiscordReplySink", "finalise_orphan"]
