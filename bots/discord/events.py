"""Discord's messages: which get a reply, in which conversation, and where.

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

Before any work, what is never for the bot is dropped here: our own and other
bots' messages, joins and pins, messages not addressed to it, those the allow
and block lists refuse (``Access``). What is left becomes a
``core.service.Incoming`` and the intake policy decides (``IntakePolicy``:
the dedupe claim first, so a second process that gets the same event, e.g.
during a gateway resume or a rolling deploy, drops it; then the handoff
rules). Only then are the bot's permissions where it would write checked, and
the reply started (``bots.discord.replies``).

Every message, live or found by a catch-up after a restart
(``bots.discord.service``), goes through one intake (``Events.take``), which
records what became of it (``core.service.intake``) and notes it in its
channel's cursor once its fate is decided (``Cursors``). While draining, the
intake first leaves a live process on the same shard a moment to take the
event, so users are answered, not sent away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bots.discord.api import NO_MENTIONS, missing_permissions
from bots.discord.conversations import Conversations, channel_conversation, lineage
from bots.discord.format import neutralise, strip_mention
from bots.discord.handover import ChannelTarget, shard_of
from bots.discord.limits import GLOBAL_SCOPE, channel_scope
from bots.discord.replies import Replies
from bots.discord.settings import PLATFORM, DiscordSettings
from core.reply import acquire_all
from core.rules import ChannelPolicy, RulesSource
from core.service import Incoming, IntakeLog, IntakeOutcome, IntakePolicy, Verdict
from core.state import REDIS_FAILURES, State

if TYPE_CHECKING:
    from core.state.lastseen import LastSeen, Seen

log = logging.getLogger(__name__)

ANSWERED_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
"""Message types that can be a question (not joins, pins, thread notices…)."""
BACK_TEXT = "I'm back in this conversation."
"""What the bot says when an agent hands a conversation back with ``resume``
(Discord's conversations are reply chains as well as threads)."""
DEFERENCE = 1.5
"""Seconds a draining process waits before taking an event, so that a live process
on the same shard takes it first; well inside the 3 seconds of an interaction."""


class Events:
    def __init__(
        self,
        *,
        client: discord.Client,
        settings: DiscordSettings,
        state: State,
        rules: RulesSource,
        policy: IntakePolicy,
        conversations: Conversations,
        replies: Replies,
        access: Access,
        on_intake: Callable[[IntakeOutcome], None] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.state = state
        self.rules = rules
        self.policy = policy
        self.conversations = conversations
        self.replies = replies
        self.access = access
        self.intake = IntakeLog(on_intake)
        """What became of each message received (``core.service.intake``)."""
        self.cursors = Cursors(client, state.last_seen)
        self.permission_log = PermissionLog()

    @property
    def me(self) -> discord.ClientUser:
        user = self.client.user
        if user is None:
            raise RuntimeError("the Discord client is not logged in")
        return user

    async def on_message(self, message: discord.Message) -> None:
        with self.replies.working():
            await self.take(message)

    async def take_caught_up(self, message: discord.Message) -> IntakeOutcome:
        """A message a catch-up found: the same intake, counted as an event
        handler, which draining waits for."""
        with self.replies.working():
            return await self.take(message)

    async def take(self, message: discord.Message) -> IntakeOutcome:
        """The intake of one message, live or caught up after a restart: decide,
        answer (or hand over), and record the outcome in ``intake``."""
        self.intake.received(message.id)
        outcome: IntakeOutcome = "failed"
        try:
            outcome = await self._take(message)
        except asyncio.CancelledError:
            if self.replies.evicted(asyncio.current_task()):  # draining handed it over
                outcome = "handed_over"
            raise
        finally:
            self.intake.settle(message.id, outcome)
        return outcome

    async def _take(self, message: discord.Message) -> IntakeOutcome:
        def ignore() -> IntakeOutcome:
            """Decided: not for the bot (a followed channel's cursor moves past it)."""
            self.cursors.seen(message, follow=False)
            return "ignored"

        me = self.me
        author = message.author
        if author.id == me.id or message.type not in ANSWERED_TYPES:
            return ignore()
        if author.bot and not self.settings.discord_allow_bots:
            return ignore()
        guild = message.guild
        channel = message.channel
        policy = policy_of(self.rules, channel)
        if guild is None and policy.mode == "auto":
            policy = policy.model_copy(update={"mode": "mention"})  # auto-reply: guilds only
        named = me.id in message.raw_mentions
        if not (guild is None or named or _replies_to(message, me) or policy.mode == "auto"):
            return ignore()
        if not message.content:
            return ignore()  # unreadable (no MESSAGE_CONTENT) or attachments only
        if not self.access.allows_author(author, channel, dm=guild is None):
            return ignore()
        if not self.replies.accepting:
            await asyncio.sleep(DEFERENCE)  # a live process on this shard claims it first
        found = await self.conversations.of(message)
        incoming = Incoming(
            platform=PLATFORM,
            message_id=str(message.id),
            conversation=found.key,
            channel=str(channel.id),
            author=str(author.id),
            text=strip_mention(message.content, me.id),
            policy=policy,
            named=named,
            continuing=found.continuing,
        )

        async def is_agent() -> bool:
            return policy.is_agent(str(author.id), {str(r) for r in role_ids(author)})

        verdict = await self.policy.decide(incoming, is_agent)
        # Its fate is sealed (this process or another one has it): a restart need
        # not look at it again, and the bot answers in this channel.
        self.cursors.seen(message, follow=True)
        if verdict is Verdict.DEDUPLICATED:
            return "deduplicated"
        await self.conversations.keep(message, found)
        if verdict is Verdict.IGNORED:
            return "ignored"
        if verdict is Verdict.FAILED:
            return "failed"
        if verdict is Verdict.RESUMED:
            await self._say_back(message)
            return "answered"
        if (
            policy.mode == "auto"
            and policy.thread_per_message
            and not found.continuing
            and isinstance(channel, discord.TextChannel)
        ):
            return await self._reply_in_new_thread(message, channel, incoming)
        return await self._reply_to_message(message, incoming)

    async def _say_back(self, message: discord.Message) -> None:
        await acquire_all(self.state.budget, (channel_scope(message.channel.id), GLOBAL_SCOPE))
        await message.channel.send(
            BACK_TEXT,
            reference=message.to_reference(fail_if_not_exists=False),
            allowed_mentions=NO_MENTIONS,
        )

    async def _reply_in_new_thread(
        self, message: discord.Message, channel: discord.TextChannel, incoming: Incoming
    ) -> IntakeOutcome:
        """Auto-reply channels with ``thread_per_message``: each customer message
        gets its own thread (its own conversation and its own rate bucket)."""
        if not self._may_write(channel, reply=False, create_thread=True):
            return "ignored"
        await self.state.budget.acquire(GLOBAL_SCOPE)
        thread = await message.create_thread(name=thread_name(incoming.text, message.author))
        incoming = dataclasses.replace(
            incoming,
            conversation=channel_conversation(channel.guild.id, thread.id),
            channel=str(thread.id),
        )
        return await self._answer(incoming, ChannelTarget(thread.id, channel.guild.id))

    async def _reply_to_message(
        self, message: discord.Message, incoming: Incoming
    ) -> IntakeOutcome:
        guild_id = message.guild.id if message.guild else None
        if guild_id is not None and not self._may_write(message.channel, reply=True):
            return "ignored"
        target = ChannelTarget(message.channel.id, guild_id, reference=message.id, notify=True)
        return await self._answer(incoming, target)

    async def _answer(self, incoming: Incoming, target: ChannelTarget) -> IntakeOutcome:
        request = await self.replies.request(incoming, target.channel)
        return await self.replies.in_channel(request, target)

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


def policy_of(rules: RulesSource, channel: object) -> ChannelPolicy:
    """The rule of the channel, or of its parent for a thread."""
    ids = lineage(channel)
    policy_channel = ids[1] if isinstance(channel, discord.Thread) and len(ids) > 1 else None
    channel_id = policy_channel or (ids[0] if ids else 0)
    return rules.policy(PLATFORM, str(channel_id))


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


# -- who may talk to the bot ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Access:
    """Who may talk to the bot, and where: the allow and block lists.

    Decided from ids alone, before anything costs a call: blocks win over allows;
    an allow list that is empty allows everyone. A thread counts as its parent
    channel and a channel as its category, so one id covers a whole support area.
    Roles are only known in guilds, so a DM is allowed by the user lists alone.
    """

    allowed_users: frozenset[int] = frozenset()
    allowed_roles: frozenset[int] = frozenset()
    blocked_users: frozenset[int] = frozenset()
    blocked_roles: frozenset[int] = frozenset()
    allowed_channels: frozenset[int] = frozenset()
    blocked_channels: frozenset[int] = frozenset()
    dms: bool = True

    @classmethod
    def from_settings(cls, settings: DiscordSettings) -> Access:
        return cls(
            allowed_users=frozenset(settings.discord_allowed_users),
            allowed_roles=frozenset(settings.discord_allowed_roles),
            blocked_users=frozenset(settings.discord_blocked_users),
            blocked_roles=frozenset(settings.discord_blocked_roles),
            allowed_channels=frozenset(settings.discord_allowed_channels),
            blocked_channels=frozenset(settings.discord_blocked_channels),
            dms=settings.discord_dms,
        )

    def allows(self, user: int, roles: Iterable[int], channels: Iterable[int], *, dm: bool) -> bool:
        """``roles``: the member's role ids (none in DMs); ``channels``: the channel,
        its parent and its category (none in DMs)."""
        roles = set(roles)
        if user in self.blocked_users or roles & self.blocked_roles:
            return False
        if dm:
            if not self.dms:
                return False
        else:
            ancestry = set(channels)
            if ancestry & self.blocked_channels:
                return False
            if self.allowed_channels and not ancestry & self.allowed_channels:
                return False
        if self.allowed_users or self.allowed_roles:
            return user in self.allowed_users or bool(roles & self.allowed_roles)
        return True

    def allows_author(self, user: discord.abc.User, channel: object, *, dm: bool) -> bool:
        """``allows`` for a discord.py message author or interaction user."""
        return self.allows(user.id, role_ids(user), () if dm else lineage(channel), dm=dm)


def role_ids(user: discord.abc.User) -> frozenset[int]:
    """A member's roles; a plain user (DMs) has none."""
    if isinstance(user, discord.Member):
        return frozenset(role.id for role in user.roles)
    return frozenset()


class PermissionLog:
    """Says once per channel what is missing there, not once per message."""

    def __init__(self) -> None:
        self._told: set[tuple[int, tuple[str, ...]]] = set()

    def missing(self, channel_id: int, missing: list[str]) -> None:
        key = (channel_id, tuple(missing))
        if key not in self._told:
            self._told.add(key)
            log.warning(
                "not replying in channel %s: the bot lacks %s there", channel_id, ", ".join(missing)
            )


# -- cursors -----------------------------------------------------------------------

FLUSH_INTERVAL = 1.0
"""Seconds between two cursor writes: a busy channel costs one write per interval."""
FOLLOWED = 10_000
"""Channels this process remembers following; the least recently seen go first."""


class Cursors:
    """The newest message the intake has dealt with, per channel it follows.

    Discord delivers a message to the gateway sessions open when it is sent, and
    never again; what a restart missed is caught up from the channels, after
    these cursors (``bots.discord.service.CatchUp``). A channel is followed from
    the first message the bot answers there on (auto-reply channels, DMs,
    channels where it was mentioned or replied to). The cursors are kept in
    Redis, per shard (``core.state.lastseen``: bounded, forgotten an hour after a
    channel's last message). Noting a message costs the handler nothing: it goes
    into memory, and a background task writes the newest ids about once a second
    with a bounded wait (and once more when the adapter closes, after its
    gateway). A write that fails is retried with the next; a cursor that lags
    only means a few messages are looked at twice.

    A message is noted once its fate is decided (ignored, or claimed in dedupe),
    never on arrival: a process that dies between the two leaves the message
    after the cursor, where the next one finds it.
    """

    def __init__(
        self,
        client: discord.Client,
        store: LastSeen,
        *,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._client = client
        self._store = store
        self.flush_interval = flush_interval
        self._followed: OrderedDict[int, None] = OrderedDict()
        self._pending: dict[str, dict[int, int]] = {}  # shard -> channel -> newest message id
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._failing = False

    def seen(self, message: discord.Message, *, follow: bool) -> None:
        """The intake is done deciding about ``message``. ``follow``: the bot answers
        in its channel, so follow the channel from now on; otherwise the message
        only moves the cursor of a channel already followed."""
        channel = message.channel.id
        if follow:
            self.follow(channel)
        elif channel not in self._followed:
            return
        guild = message.guild.id if message.guild is not None else None
        shard = str(shard_of(guild, self._client.shard_count or 1))
        pending = self._pending.setdefault(shard, {})
        if message.id > pending.get(channel, 0):
            pending[channel] = message.id
        self._wake.set()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever())

    def follow(self, channel: int) -> None:
        self._followed[channel] = None
        self._followed.move_to_end(channel)
        while len(self._followed) > FOLLOWED:
            self._followed.popitem(last=False)

    async def recent(self, shard: int, limit: int) -> list[Seen]:
        """The cursors of the shard's channels, the most recently active first."""
        return await self._store.recent(PLATFORM, str(shard), limit)

    async def forget(self, shard: int, channel: str) -> None:
        """A channel that can't be read any more."""
        try:
            await self._store.forget(PLATFORM, str(shard), channel)
        except REDIS_FAILURES as exc:
            log.warning("could not forget channel %s: %s", channel, exc)

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            await asyncio.sleep(self.flush_interval)

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for shard, seen in pending.items():
            try:
                await self._store.advance(
                    PLATFORM, shard, {str(c): str(m) for c, m in seen.items()}
                )
            except REDIS_FAILURES as exc:
                if not self._failing:
                    log.warning("could not note the newest messages seen (retrying): %s", exc)
                self._failing = True
                again = self._pending.setdefault(shard, {})
                for channel, message in seen.items():
                    again[channel] = max(message, again.get(channel, 0))
                self._wake.set()
            else:
                self._failing = False

    async def aclose(self) -> None:
        """After the gateway closed: write the last cursors."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._flush()
