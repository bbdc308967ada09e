"""Starting a reply: where it goes, the sink it streams through, and what
draining does to one that has not started yet.

A message's reply streams under it in its channel (``in_channel``: a
channel message replying to the user's, notifying them), an ``/ask``'s into
its deferred response (``bots.discord.controls``); both go through
``deliver``, which asks the core's ``Responder.answer`` with Discord's pacing
(``GuardedPacing``, which holds updates while the invalid-request guard says
so). The request's defaults (the channel's prompt and model) are the intake
policy's (``IntakePolicy.request``); a ``/model`` choice overrides the model.

Every reply's request carries its hand-over payload (``bots.discord.handover``):
should this process stop before the reply showed any text, the next process
of the shard answers the message anew (``core.state.inflight``) instead of the
message going unanswered.

**Draining** (SIGTERM, a deploy): the gateway stays open while the replies in
flight finish, because Discord never redelivers an event and one that reaches
no process is lost. A reply that can't start here any more is ``refused``:
handed over to the next process of its shard, or, for an ``/ask``, told to
ask again. So is one that was waiting for its conversation's lock when the
drain began: it is cut short at once (``begin_draining``), because no reply
can start in this process any more, and a waiter that got the lock would have
stored the user's turn before being refused, so the next process would store
it a second time. Every event handler counts itself (``working``), so the
gateway closes only once they are done handing over (``settle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.api import ChannelOutlet, Outlet
from bots.discord.conversations import Conversations, lineage
from bots.discord.handover import AskTarget, ChannelTarget, refuse, shard_of, to_payload
from bots.discord.settings import DiscordSettings
from bots.discord.sink import DiscordReplySink
from core.clock import Clock, MonotonicClock
from core.reply import Pacing, Sink
from core.service import (
    Incoming,
    IntakeOutcome,
    IntakePolicy,
    ReplyRequest,
    Responder,
    SinkFactory,
)
from core.state import ConversationKey, State

if TYPE_CHECKING:
    from bots.discord.controls import ChannelModels

log = logging.getLogger(__name__)

Refused = Callable[[], Awaitable[IntakeOutcome]]
"""What a reply that can't start here does instead (hand over, or say so)."""


class Replies:
    def __init__(
        self,
        *,
        client: discord.Client,
        settings: DiscordSettings,
        state: State,
        responder: Responder,
        policy: IntakePolicy,
        models: ChannelModels,
        conversations: Conversations,
        pacing: Pacing,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.state = state
        self.responder = responder
        self.policy = policy
        self.models = models
        self.conversations = conversations
        self.pacing = pacing
        self.clock = clock or MonotonicClock()
        self.accepting = True
        """False once the process drains: new replies are handed over, or refused."""
        self._busy: set[asyncio.Task[Any]] = set()  # handlers of events and hand-overs
        self._waiting: set[asyncio.Task[Any]] = set()  # ... before their reply started
        self._evicted: set[asyncio.Task[Any]] = set()  # ... whose wait draining cut short

    # -- draining ----------------------------------------------------------------

    def begin_draining(self) -> None:
        """The process is going away: from now on replies are refused, and handlers
        still waiting for theirs to start are cut short (see the module docstring).
        Events keep arriving: the gateway stays open."""
        if self.accepting:
            self.accepting = False
            log.info("Discord: draining; new messages go to the next process of their shard")
        for task in list(self._waiting):
            if task not in self._evicted:
                self._evicted.add(task)
                task.cancel()

    def evicted(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether draining cut ``task``'s wait short (it refused its reply)."""
        return task in self._evicted

    async def settle(self, within: float) -> None:
        """After the drain, before the gateway closes: give every event handler
        ``within`` seconds to finish handing over (or answering)."""
        self.begin_draining()
        await asyncio.sleep(0)  # handlers of events just dispatched start, and count
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        # Again and again: events keep arriving until the gateway closes.
        while busy := [t for t in self._busy if not t.done() and t is not asyncio.current_task()]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("Discord: %d event handlers still running at shutdown", len(busy))
                return
            await asyncio.wait(busy, timeout=remaining)

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Count the current task as an event handler, which ``settle`` waits for."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self._busy.add(task)
        try:
            yield
        finally:
            self._busy.discard(task)
            self._waiting.discard(task)
            self._evicted.discard(task)

    # -- the reply ---------------------------------------------------------------

    async def request(self, incoming: Incoming, channel_id: int) -> ReplyRequest:
        """The reply to ``incoming`` in channel ``channel_id``, with the model chosen
        there (``/model``: a thread's own choice, else its parent's)."""
        channel = self.client.get_channel(channel_id)
        parents = lineage(channel)[:2] if isinstance(channel, discord.Thread) else (channel_id,)
        model = await self.models.chosen(*parents)
        return self.policy.request(incoming, model=model, target={"channel": str(channel_id)})

    async def in_channel(self, request: ReplyRequest, target: ChannelTarget) -> IntakeOutcome:
        """Stream the reply into a channel, thread or DM, replying to the user's
        message when ``target`` names one."""
        request = self.handing_over(request, target)
        reference = None
        if target.reference is not None:
            reference = discord.MessageReference(
                message_id=target.reference,
                channel_id=target.channel,
                guild_id=target.guild,
                fail_if_not_exists=False,
            )
        return await self.deliver(
            request,
            outlet=lambda: ChannelOutlet(
                self.messageable(target.channel, target.guild),
                reference=reference,
                notify_first=target.notify,
            ),
            refused=lambda: refuse(self, request, target),
        )

    async def deliver(
        self,
        request: ReplyRequest,
        *,
        outlet: Callable[[], Outlet],
        fallback: Callable[[], ChannelOutlet | None] = lambda: None,
        deadline: float | None = None,
        refused: Refused,
    ) -> IntakeOutcome:
        """Stream the reply, or, when it can't start in this process (draining),
        call ``refused``: an accepted event is never dropped in silence.
        ``fallback`` and ``deadline`` serve an ``/ask``: where and from when its
        reply continues once its token is about to die."""
        if not self.accepting:
            return await refused()
        task = asyncio.current_task()
        make_sink = self._sink_factory(
            request.conversation, int(request.author), outlet, fallback, deadline
        )

        def started(reply_id: str) -> Sink:
            # Past the quota check and the lock: draining must not cut it short now.
            self._waiting.discard(task)
            return make_sink(reply_id)

        if task is not None:
            self._waiting.add(task)
        try:
            # Evicted by draining before the reply started, the answer is refused
            # (``Responder.answer`` hands over what it was cancelled before recording).
            return await self.responder.answer(
                request, started, pacing=self.pacing, refused=refused
            )
        finally:
            self._waiting.discard(task)

    def _sink_factory(
        self,
        conversation: ConversationKey,
        asker: int,
        outlet: Callable[[], Outlet],
        fallback: Callable[[], ChannelOutlet | None],
        deadline: float | None,
    ) -> SinkFactory:
        conversations = self.conversations

        def make_sink(reply_id: str) -> Sink:
            async def created(message_id: int) -> None:
                if conversation.thread:  # replies to it continue the conversation
                    await conversations.remember(conversation, message_id)

            return DiscordReplySink(
                outlet(),
                reply_id=reply_id,
                asker=asker,
                mode=self.settings.discord_render,
                fallback=fallback(),
                deadline=deadline,
                clock=self.clock,
                on_created=created,
            )

        return make_sink

    def handing_over(
        self, request: ReplyRequest, target: ChannelTarget | AskTarget
    ) -> ReplyRequest:
        """``request`` with what the next process of its shard needs to answer it
        (kept in its in-flight record, and handed over when it is refused)."""
        return dataclasses.replace(
            request, handover=to_payload(request, target), partition=self.partition(target.guild)
        )

    # -- where -------------------------------------------------------------------

    def partition(self, guild_id: int | None) -> str:
        """Who may answer a message of ``guild_id`` for this process: a process
        running its shard (``core.state.deferred``)."""
        return str(shard_of(guild_id, self.client.shard_count or 1))

    def messageable(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(channel_id, guild_id=guild_id)

    def channel_outlet(self, channel_id: int, guild_id: int | None) -> ChannelOutlet:
        """Where an ``/ask`` reply continues once its token is about to die."""
        return ChannelOutlet(self.messageable(channel_id, guild_id))


__all__ = ["Refused", "Replies"]
