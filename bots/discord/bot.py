"""Discord events: which messages get a reply, in which conversation, and where.

- A **mention** of the bot, or a **reply** to one of its messages → a reply that
  streams under the message, in the conversation of the reply chain (in a
  thread: the thread's conversation).
- **DMs** (when ``DISCORD_DMS`` is on) → every message is answered, one
  conversation per DM.
- **Auto-reply channels** (the rules file, shared with Slack) → every customer
  message is answered with the channel's prompt and model, optionally in a
  new thread per message (its own conversation, and its own rate bucket).
  When a human agent (by user id or role) writes in a conversation, the bot
  stays quiet there until an agent mentions it with ``resume`` or the quiet
  time passes.
- ``/ask``, ``/reset``, ``/model`` (``bots.discord.commands``) and the Stop button.

Before any work: our own and other bots' messages are dropped, the allow and
block lists are applied, the event is claimed in Redis (a second process that
gets the same event, e.g. during a gateway resume or a rolling deploy, drops
it), and the bot's permissions where it would write are checked.

**Draining** (SIGTERM, a deploy): the gateway stays open while the replies in
flight finish, because Discord never redelivers an event and one that reaches
no process is lost. A message that arrives then is handed over to the next
process of its shard (``bots.discord.handover``); so is one whose reply can no
longer start here (``ShuttingDown``, e.g. after waiting for the conversation's
lock). A new ``/ask`` is told at once to ask again; a deferred one that can't be
answered any more gets its "thinking…" response edited to say so. While
draining, the bot first leaves a live process on the same shard (a rolling
deploy runs both) a moment to take the event, so users are answered, not sent
away.

**A process that dies** (a crash, or a drain that ran out of time) leaves its
replies' in-flight records behind. A reply that had shown text is finalised as
interrupted by any process's sweeper; one that had shown nothing yet is
answered anew by the next process of its shard, because every record carries
the same hand-over payload a drain would have left. A deferred ``/ask`` is in
its record from the start (its "thinking…" response is message 0): it says it
is answering again, and the next process answers in it while the token lives
(``_ask_again``), so it never stays "thinking…".

Every message, live or found by a catch-up after a restart
(``bots.discord.catchup``), goes through one intake (``take``), which records
what became of it (``core.service.intake``) and notes it in its channel's cursor once
its fate is decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import discord

from bots.discord.access import Access, lineage, role_ids
from bots.discord.catchup import CatchUp
from bots.discord.controls import parse_stop
from bots.discord.conversations import (
    ask_conversation,
    chain_conversation,
    chain_turns,
    channel_conversation,
    channel_turns,
)
from bots.discord.format import Rendered, neutralise, strip_mention
from bots.discord.handover import (
    PLATFORM,
    AskTarget,
    ChannelTarget,
    from_payload,
    shard_of,
    to_payload,
)
from bots.discord.models import ChannelModels
from bots.discord.outlets import (
    NO_MENTIONS,
    ChannelOutlet,
    InteractionOutlet,
    Outlet,
    TokenExpired,
)
from bots.discord.permissions import PermissionLog, missing_permissions
from bots.discord.ratelimits import GLOBAL_SCOPE, channel_scope, interaction_scope
from bots.discord.settings import INTERACTION_TOKEN_LIFETIME, DiscordSettings
from bots.discord.sink import DiscordReplySink
from core.clock import Clock, MonotonicClock
from core.config import Settings
from core.reply import MessageGone, RateLimited, Sink, acquire_all
from core.rules import RESUME_COMMAND, ChannelPolicy, RulesSource
from core.service import ReplyRequest, Responder, ShuttingDown, SinkFactory
from core.service.intake import IntakeLog, Outcome
from core.state import REDIS_FAILURES, ConversationKey, DeferredRequest, State

log = logging.getLogger(__name__)

ANSWERED_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
"""Message types that can be a question (not joins, pins, thread notices…)."""

THREAD_HISTORY = 50
"""Messages of a thread read back when its conversation is not in memory."""

BACK_TEXT = "I'm back in this conversation."
NOT_ALLOWED_TEXT = "Sorry, I can't answer you here."
RESTARTING_TEXT = "I'm restarting — please ask again in a minute."
DEFERENCE = 1.5
"""Seconds a draining process waits before taking an event, so that a live process
on the same shard takes it first; well inside the 3 seconds of an interaction."""
ONLY_ASKER_TEXT = "Only the person who asked, or a moderator, can stop this reply."


class DiscordBot:
    def __init__(
        self,
        *,
        client: discord.Client,
        settings: DiscordSettings,
        core: Settings,
        state: State,
        responder: Responder,
        rules: RulesSource,
        clock: Clock | None = None,
        on_intake: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.core = core
        self.state = state
        self.responder = responder
        self.rules = rules
        self.clock = clock or MonotonicClock()
        self.models = ChannelModels(state.choices, settings.discord_models)
        self.access = Access.from_settings(settings)
        self.permission_log = PermissionLog()
        self.intake = IntakeLog(on_intake)
        """What became of each message received (``core.service.intake``)."""
        self.catchup = CatchUp(
            client,
            state.last_seen,
            state.budget,
            take=self._take_caught_up,
            taken=self.intake.taken,
        )
        """Cursors of the channels it answers in, and catching up after a restart."""
        self.accepting = True
        """False once the process drains: new replies are handed over, or refused."""
        self._busy: set[asyncio.Task[Any]] = set()  # handlers of events and hand-overs
        self._waiting: set[asyncio.Task[Any]] = set()  # ... before their reply started
        self._evicted: set[asyncio.Task[Any]] = set()  # ... whose wait draining cut short

    def register(self) -> None:
        self.client.event(self.on_message)
        self.client.event(self.on_interaction)
        self.client.event(self.on_shard_ready)

    def begin_draining(self) -> None:
        """The process is going away: from now on replies are handed over or refused
        (see the module docstring). Events keep arriving: the gateway stays open.

        Handlers still waiting for their reply to start (for the conversation's lock,
        mostly) are cut short now and hand over (or, for ``/ask``, say so): once the
        drain begins no reply can start in this process, and a waiter that got the
        lock would have stored the user's turn before being refused, so the next
        process would store it a second time."""
        if self.accepting:
            self.accepting = False
            log.info("Discord: draining; new messages go to the next process of their shard")
        self._evict_waiting()

    def _evict_waiting(self) -> None:
        for task in list(self._waiting):
            if task not in self._evicted:
                self._evicted.add(task)
                task.cancel()

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
    def _working(self) -> Iterator[None]:
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

    @property
    def me(self) -> discord.ClientUser:
        user = self.client.user
        if user is None:
            raise RuntimeError("the Discord client is not logged in")
        return user

    # -- messages ----------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        with self._working():
            await self.take(message)

    async def take(self, message: discord.Message) -> Outcome:
        """The intake of one message, live or caught up after a restart: decide,
        answer (or hand over), and record the outcome in ``intake``."""
        self.intake.received(message.id)
        outcome: Outcome = "failed"
        try:
            outcome = await self._on_message(message)
        except asyncio.CancelledError:
            if asyncio.current_task() in self._evicted:  # draining handed it over
                outcome = "handed_over"
            raise
        finally:
            self.intake.settle(message.id, outcome)
        return outcome

    async def _take_caught_up(self, message: discord.Message) -> Outcome:
        """A message a catch-up found (``bots.discord.catchup``): the same intake,
        counted as an event handler, which ``settle`` waits for."""
        with self._working():
            return await self.take(message)

    async def on_shard_ready(self, shard_id: int) -> None:
        """A shard connected on a new session: what was sent while it was away
        reached no process, so catch up on it."""
        self.catchup.start(shard_id)

    async def _on_message(self, message: discord.Message) -> Outcome:
        def ignore() -> Outcome:
            """Decided: not for the bot (a followed channel's cursor moves past it)."""
            self.catchup.seen(message, follow=False)
            return "ignored"

        me = self.me
        author = message.author
        if author.id == me.id or message.type not in ANSWERED_TYPES:
            return ignore()
        if author.bot and not self.settings.discord_allow_bots:
            return ignore()
        guild = message.guild
        channel = message.channel
        policy = self._policy(channel)
        auto = guild is not None and policy.mode == "auto"
        explicit = me.id in message.raw_mentions
        to_bot = _replies_to(message, me)
        if not (guild is None or explicit or to_bot or auto):
            return ignore()
        if not message.content:
            return ignore()  # unreadable (no MESSAGE_CONTENT) or attachments only
        if not self.access.allows_author(author, channel, dm=guild is None):
            return ignore()
        if not self.accepting:
            await asyncio.sleep(DEFERENCE)  # a live process on this shard claims it first
        claimed = await self.state.dedupe.claim(f"discord:{message.id}")
        # Its fate is sealed (this process or another one has it): a restart need
        # not look at it again, and the bot answers in this channel.
        self.catchup.seen(message, follow=True)
        if not claimed:
            return "deduplicated"
        text = strip_mention(message.content, me.id)
        conversation, continuing = await self._conversation_of(message)
        if auto:
            if policy.is_agent(str(author.id), {str(r) for r in role_ids(author)}):
                if explicit and text.lower() == RESUME_COMMAND:
                    await self._resume(message, conversation)
                    return "answered"
                if not explicit:
                    if continuing:
                        await self.state.handoffs.hand_over(
                            conversation, policy.handoff_quiet_minutes
                        )
                    return "ignored"
            if await self.state.handoffs.is_handed_over(conversation):
                return "ignored"
        if (
            auto
            and policy.thread_per_message
            and not continuing
            and isinstance(channel, discord.TextChannel)
        ):
            return await self._reply_in_new_thread(message, channel, text, policy)
        return await self._reply_to_message(message, channel, conversation, text, policy)

    async def _conversation_of(self, message: discord.Message) -> tuple[ConversationKey, bool]:
        """The message's conversation, and whether it continues an existing one
        (a thread, a DM, a reply) rather than starting a reply chain."""
        channel = message.channel
        guild = message.guild
        if guild is None or isinstance(channel, discord.Thread):
            conversation = channel_conversation(guild.id if guild else None, channel.id)
            if isinstance(channel, discord.Thread):
                await self._recall_thread(conversation, channel, before=message)
            return conversation, True
        reference = message.reference
        if reference is None or reference.message_id is None or reference.channel_id != channel.id:
            conversation = chain_conversation(guild.id, channel.id, message.id)
            await self.state.chains.remember(conversation, str(message.id))
            return conversation, False
        known = await self.state.chains.lookup(PLATFORM, str(reference.message_id))
        if known is not None:
            conversation = known
        else:
            turns, root = await chain_turns(
                message,
                self.me.id,
                depth=self.settings.discord_chain_depth,
                budget=self.state.budget,
            )
            conversation = chain_conversation(guild.id, channel.id, root)
            if turns and not await self._remembers(conversation):
                await self.state.conversations.append(conversation, *turns)
                log.info("rebuilt %d turns of reply chain %s from Discord", len(turns), root)
        await self.state.chains.remember(conversation, str(message.id))
        return conversation, True

    async def _recall_thread(
        self, conversation: ConversationKey, thread: discord.Thread, before: discord.abc.Snowflake
    ) -> None:
        """A thread the bot has no memory of (it expired, or the bot was just called
        in): read its recent messages back once, never past a ``/reset``."""
        if await self._remembers(conversation):
            return
        since = await self.state.resets.since(conversation)
        turns = await channel_turns(
            thread,
            self.me.id,
            before=before,
            after=discord.Object(int(since)) if since else None,
            limit=THREAD_HISTORY,
            budget=self.state.budget,
        )
        if turns:
            await self.state.conversations.append(conversation, *turns)
            log.info("rebuilt %d turns of thread %s from Discord", len(turns), thread.id)

    async def _remembers(self, conversation: ConversationKey) -> bool:
        return await self.state.conversations.exists(conversation)

    async def _resume(self, message: discord.Message, conversation: ConversationKey) -> None:
        await self.state.handoffs.resume(conversation)
        await acquire_all(self.state.budget, (channel_scope(message.channel.id), GLOBAL_SCOPE))
        await message.channel.send(
            BACK_TEXT,
            reference=message.to_reference(fail_if_not_exists=False),
            allowed_mentions=NO_MENTIONS,
        )

    async def _reply_in_new_thread(
        self,
        message: discord.Message,
        channel: discord.TextChannel,
        text: str,
        policy: ChannelPolicy,
    ) -> Outcome:
        """Auto-reply channels with ``thread_per_message``: each customer message
        gets its own thread (its own conversation and its own rate bucket)."""
        if not self._may_write(channel, reply=False, create_thread=True):
            return "ignored"
        await self.state.budget.acquire(GLOBAL_SCOPE)
        thread = await message.create_thread(name=thread_name(text, message.author))
        conversation = channel_conversation(channel.guild.id, thread.id)
        target = ChannelTarget(thread.id, channel.guild.id)
        return await self._answer_message(message.author, conversation, text, policy, target)

    async def _reply_to_message(
        self,
        message: discord.Message,
        channel: discord.abc.Messageable,
        conversation: ConversationKey,
        text: str,
        policy: ChannelPolicy,
    ) -> Outcome:
        guild_id = message.guild.id if message.guild else None
        if guild_id is not None and not self._may_write(channel, reply=True):
            return "ignored"
        target = ChannelTarget(message.channel.id, guild_id, reference=message.id, notify=True)
        return await self._answer_message(message.author, conversation, text, policy, target)

    # -- interactions ------------------------------------------------------------

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """The Stop button, from whichever process Discord delivered the press to."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: Mapping[str, Any] = interaction.data or {}
        custom_id = data.get("custom_id")
        stop = parse_stop(custom_id) if isinstance(custom_id, str) else None
        if stop is None:
            return
        user = interaction.user
        if user.id != stop.asker and not interaction.permissions.manage_messages:
            await interaction.response.send_message(ONLY_ASKER_TEXT, ephemeral=True)
            return
        # Acknowledge without changing the message: the reply's own last edit does.
        with contextlib.suppress(discord.HTTPException):  # another process was quicker
            await interaction.response.defer()
        await self.state.cancel.cancel(stop.reply_id, f"by {user.display_name}")

    async def ask(self, interaction: discord.Interaction[Any], prompt: str) -> None:
        """``/ask``: defer at once (Discord allows 3 seconds), then stream into the
        response, moving to a channel message before the token dies."""
        with self._working():
            await self._ask(interaction, prompt)

    async def _ask(self, interaction: discord.Interaction[Any], prompt: str) -> None:
        deadline = self.clock.now() + self.settings.discord_interaction_window
        channel = interaction.channel
        dm = interaction.guild_id is None
        if not self.accepting:
            await self._turn_away(interaction)
            return
        if not self.access.allows_author(interaction.user, channel, dm=dm):
            await interaction.response.send_message(NOT_ALLOWED_TEXT, ephemeral=True)
            return
        try:
            deferral = await interaction.response.defer(thinking=True)
        except discord.HTTPException as exc:  # too late, or another process took it
            log.warning("could not defer /ask %s: %s", interaction.id, exc)
            return
        response_id = deferral.message_id if deferral is not None else None
        channel_id = interaction.channel_id or 0
        conversation = command_conversation(interaction)
        if isinstance(channel, discord.Thread):
            await self._recall_thread(conversation, channel, before=interaction)
        writable = dm or not missing_permissions(
            interaction.app_permissions,
            thread=isinstance(channel, discord.Thread),
            mode=self.settings.discord_render,
            reply=True,
        )
        guild_id = interaction.guild_id
        request = await self._request(
            interaction.user.id, conversation, prompt, self._policy(channel), channel_id
        )
        if response_id is not None:
            # Should this process die before the first words, the next one of the
            # shard answers in the same "thinking…" response (see ``_ask_again``).
            target = AskTarget(
                app=interaction.application_id,
                token=interaction.token,
                response=response_id,
                channel=channel_id,
                guild=guild_id,
                asked_at=interaction.created_at.timestamp(),
                writable=writable,
            )
            request = dataclasses.replace(
                request, handover=to_payload(request, target), partition=self._partition(guild_id)
            )
        await self._deliver(
            request,
            outlet=lambda: InteractionOutlet.of(interaction, original_id=response_id),
            fallback=lambda: (
                ChannelOutlet(self._messageable(channel_id, guild_id)) if writable else None
            ),
            deadline=deadline,
            refused=lambda: self._restarting(interaction),
        )

    async def _turn_away(self, interaction: discord.Interaction[Any]) -> None:
        """A new ``/ask`` while draining. Its token only works for this application
        and an answer must come within 3 seconds, so it is not handed over: a live
        process on the shard may take it (it defers at once), else the user is asked
        to try again, still inside Discord's 3 seconds."""
        await asyncio.sleep(DEFERENCE)
        try:
            await interaction.response.send_message(RESTARTING_TEXT, ephemeral=True)
        except discord.HTTPException as exc:  # 40060: a live process took it
            log.info("left /ask %s to another process: %s", interaction.id, exc)

    async def _restarting(self, interaction: discord.Interaction[Any]) -> None:
        """A deferred ``/ask`` whose reply can't start here any more: its "thinking…"
        response says so rather than thinking until the token dies."""
        try:
            await self.state.budget.acquire(interaction_scope(interaction.token))
            await interaction.edit_original_response(
                content=RESTARTING_TEXT, allowed_mentions=NO_MENTIONS
            )
        except discord.HTTPException as exc:
            log.warning("could not tell /ask %s that the bot restarts: %s", interaction.id, exc)

    async def reset(self, interaction: discord.Interaction[Any]) -> bool:
        """``/reset``: forget the conversation the command belongs to."""
        conversation = command_conversation(interaction)
        forgot = await self.state.conversations.reset(conversation)
        await self.state.resets.mark(conversation, str(interaction.id))
        return forgot

    # -- the reply ---------------------------------------------------------------

    async def _request(
        self,
        author_id: int,
        conversation: ConversationKey,
        text: str,
        policy: ChannelPolicy,
        channel_id: int,
    ) -> ReplyRequest:
        channel = self.client.get_channel(channel_id)
        parents = lineage(channel)[:2] if isinstance(channel, discord.Thread) else (channel_id,)
        return ReplyRequest(
            platform=PLATFORM,
            conversation=conversation,
            author=str(author_id),
            text=text or "(empty message)",
            channel=str(channel_id),
            system_prompt=policy.system_prompt or self.core.system_prompt,
            model=await self.models.chosen(*parents) or policy.model,
            target={"channel": str(channel_id)},
        )

    async def _answer_message(
        self,
        author: discord.abc.User,
        conversation: ConversationKey,
        text: str,
        policy: ChannelPolicy,
        target: ChannelTarget,
    ) -> Outcome:
        request = await self._request(author.id, conversation, text, policy, target.channel)
        return await self._reply_in_channel(request, target)

    async def answer_handed_over(self, deferred: DeferredRequest) -> None:
        """Answer a message that a draining process accepted (``run_pickup`` calls
        this); raises ``ValueError`` for a payload this version can't read."""
        handed = from_payload(deferred.payload)
        with self._working():
            target = handed.target
            log.info(
                "answering in %s %s handed over %.1fs ago",
                handed.request.conversation.id,
                "an /ask" if isinstance(target, AskTarget) else "a message",
                time.time() - deferred.deferred_at,
            )
            if isinstance(target, AskTarget):
                await self._ask_again(handed.request, target)
            else:
                await self._reply_in_channel(handed.request, target)

    async def _ask_again(self, request: ReplyRequest, target: AskTarget) -> Outcome:
        """An ``/ask`` whose process died before the answer began: answer it in its
        own response, as its process would have, for as long as the token allows;
        past ``DISCORD_INTERACTION_WINDOW`` the reply moves to the channel (the
        response pointing there), as any ``/ask`` reply does."""
        age = time.time() - target.asked_at
        if age >= INTERACTION_TOKEN_LIFETIME and not target.writable:
            log.warning(
                "an /ask handed over %.0fs after it was asked can't be answered: its "
                "token is dead and the bot can't write in its channel",
                age,
            )
            return "failed"
        request = dataclasses.replace(
            request, handover=to_payload(request, target), partition=self._partition(target.guild)
        )
        return await self._deliver(
            request,
            outlet=lambda: InteractionOutlet.resumed(
                self.client,
                app_id=target.app,
                token=target.token,
                channel_id=target.channel,
                original_id=target.response,
            ),
            fallback=lambda: (
                ChannelOutlet(self._messageable(target.channel, target.guild))
                if target.writable
                else None
            ),
            deadline=self.clock.now() + self.settings.discord_interaction_window - age,
            refused=lambda: self._hand_over(request, target),
        )

    async def _reply_in_channel(self, request: ReplyRequest, target: ChannelTarget) -> Outcome:
        # The in-flight record keeps the hand-over payload: should this process stop
        # before the reply showed any text, the next process of the shard answers the
        # message anew (``core.state.inflight``) instead of the message going unanswered.
        request = dataclasses.replace(
            request, handover=to_payload(request, target), partition=self._partition(target.guild)
        )
        reference = None
        if target.reference is not None:
            reference = discord.MessageReference(
                message_id=target.reference,
                channel_id=target.channel,
                guild_id=target.guild,
                fail_if_not_exists=False,
            )
        return await self._deliver(
            request,
            outlet=lambda: ChannelOutlet(
                self._messageable(target.channel, target.guild),
                reference=reference,
                notify_first=target.notify,
            ),
            refused=lambda: self._hand_over(request, target),
        )

    async def _deliver(
        self,
        request: ReplyRequest,
        *,
        outlet: Callable[[], Outlet],
        fallback: Callable[[], ChannelOutlet | None] = lambda: None,
        deadline: float | None = None,
        refused: Callable[[], Awaitable[None]],
    ) -> Outcome:
        """Stream the reply, or, when it can't start in this process (draining), call
        ``refused``, which hands it over or tells the user: an accepted event is never
        dropped in silence."""
        if not self.accepting:
            await refused()
            return "handed_over"
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
            await self.responder.respond(request, started)
        except ShuttingDown:
            log.info("not answering in %s here: shutting down", request.conversation.id)
            await refused()
            return "handed_over"
        except asyncio.CancelledError:
            if task in self._evicted:  # by draining, before the reply started
                log.info("not waiting in %s any longer: shutting down", request.conversation.id)
                await refused()
            raise
        finally:
            self._waiting.discard(task)
        return "answered"

    async def _hand_over(self, request: ReplyRequest, target: ChannelTarget | AskTarget) -> None:
        """Leave the reply to the next process of the message's shard; without Redis,
        ask the user to try again rather than answer nothing."""
        partition = self._partition(target.guild)
        try:
            await self.state.deferred.push(PLATFORM, partition, to_payload(request, target))
        except REDIS_FAILURES as exc:
            log.error(
                "could not hand the reply in %s over (%s): asking its author to try again",
                request.conversation.id,
                str(exc) or type(exc).__name__,
            )
            if isinstance(target, AskTarget):
                await self._ask_restarting(target)
            else:
                await self._say_restarting(target)
            return
        log.info("handed the reply in %s over to shard %s", request.conversation.id, partition)

    async def _say_restarting(self, target: ChannelTarget) -> None:
        channel = self._messageable(target.channel, target.guild)
        reply: dict[str, Any] = {}
        if target.reference is not None:
            message = channel.get_partial_message(target.reference)
            reply["reference"] = message.to_reference(fail_if_not_exists=False)
        try:
            await acquire_all(self.state.budget, (channel_scope(target.channel), GLOBAL_SCOPE))
            await channel.send(RESTARTING_TEXT, allowed_mentions=NO_MENTIONS, **reply)
        except discord.HTTPException as exc:
            log.warning("could not tell channel %s that the bot restarts: %s", target.channel, exc)

    async def _ask_restarting(self, target: AskTarget) -> None:
        """``_restarting`` for an ``/ask`` another process deferred."""
        outlet = InteractionOutlet.resumed(
            self.client,
            app_id=target.app,
            token=target.token,
            channel_id=target.channel,
            original_id=target.response,
        )
        try:
            await acquire_all(self.state.budget, outlet.scopes)
            await outlet.edit(target.response, Rendered(RESTARTING_TEXT, None), None)
        except (discord.HTTPException, TokenExpired, MessageGone, RateLimited) as exc:
            log.warning(
                "could not tell an /ask in %s that the bot restarts: %s", target.channel, exc
            )

    def _sink_factory(
        self,
        conversation: ConversationKey,
        asker: int,
        outlet: Callable[[], Outlet],
        fallback: Callable[[], ChannelOutlet | None],
        deadline: float | None,
    ) -> SinkFactory:
        chains = self.state.chains

        def make_sink(reply_id: str) -> Sink:
            async def created(message_id: int) -> None:
                if conversation.thread:  # replies to it continue the conversation
                    await chains.remember(conversation, str(message_id))

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

    # -- helpers -----------------------------------------------------------------

    def _policy(self, channel: object) -> ChannelPolicy:
        """The rule of the channel, or of its parent for a thread."""
        ids = lineage(channel)
        policy_channel = ids[1] if isinstance(channel, discord.Thread) and len(ids) > 1 else None
        channel_id = policy_channel or (ids[0] if ids else 0)
        return self.rules.policy("discord", str(channel_id))

    def _may_write(self, channel: object, *, reply: bool, create_thread: bool = False) -> bool:
        if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
            return True  # DMs and uncached channels: nothing to check against
        permissions = channel.permissions_for(channel.guild.me)
        missing = missing_permissions(
            permissions,
            thread=isinstance(channel, discord.Thread),
            mode=self.settings.discord_render,
            reply=reply,
            create_thread=create_thread,
        )
        if missing:
            self.permission_log.missing(channel.id, missing)
        return not missing

    def _partition(self, guild_id: int | None) -> str:
        """Who may answer a message of ``guild_id`` for this process: a process
        running its shard (``core.state.deferred``)."""
        return str(shard_of(guild_id, self.client.shard_count or 1))

    def _messageable(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(channel_id, guild_id=guild_id)


def command_conversation(interaction: discord.Interaction[Any]) -> ConversationKey:
    """``/ask`` and ``/reset``: the DM or thread, else the user's own in the channel."""
    channel_id = interaction.channel_id or 0
    if interaction.guild_id is None or isinstance(interaction.channel, discord.Thread):
        return channel_conversation(interaction.guild_id, channel_id)
    return ask_conversation(interaction.guild_id, channel_id, interaction.user.id)


def thread_name(text: str, author: discord.abc.User) -> str:
    """A thread's title: the start of the customer's message (Discord allows 100)."""
    first = " ".join(text.split())
    if not first:
        return f"Conversation with {author.display_name}"[:100]
    return neutralise(first if len(first) <= 80 else first[:79] + "…")


def _replies_to(message: discord.Message, me: discord.ClientUser) -> bool:
    """Whether the message replies to one of the bot's messages."""
    reference = message.reference
    if reference is None:
        return False
    resolved = reference.resolved
    if isinstance(resolved, discord.Message):
        return resolved.author.id == me.id
    # Not included by the gateway: a reply that pings its author lists them.
    return any(user.id == me.id for user in message.mentions)
