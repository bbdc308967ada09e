"""What a conversation is on Discord, how a message finds its own, and how one
lost from memory is read back.

- A **DM** is one conversation; so is a **thread** (its own channel).
- In a guild channel a conversation is a **reply chain**: a mention starts one
  (keyed by that message), and replying to any message of it, the bot's or
  the user's, continues it. Which message belongs to which conversation is
  kept in Redis (``core.state.chains``), so a reply finds its conversation with
  one read however long the chain is.
- ``/reset`` leaves a mark (``core.state.resets``), so reading a thread back
  never brings back what the user asked the bot to forget.
- ``/ask`` in a guild channel keeps one conversation per user and channel; in
  a thread or DM it joins that channel's conversation.

Redis is the memory (``core.state.conversations``). When a conversation is not
there (it expired, or the chain started before the bot was around), it is read
back once from Discord (the rule of when is ``core.service.history``): the
reply chain upwards, or the thread's recent history. Without the
MESSAGE_CONTENT intent other people's messages read as empty unless they
mention the bot; those are skipped.

A message's conversation is found before the message is claimed (the intake
policy needs it to tell whether an agent has it), but nothing is written for
it until the message is the bot's to deal with (``Conversations.keep``): the
ids of a reply chain, a chain read back, a thread recalled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import discord

from bots.discord.format import answer_of, strip_mention
from bots.discord.limits import GLOBAL_SCOPE
from bots.discord.settings import PLATFORM, DiscordSettings
from core.reply import Budget
from core.service import recall, remembers, store_recalled
from core.state import REDIS_FAILURES, ConversationKey, State, Turn

log = logging.getLogger(__name__)

DM_WORKSPACE = "dm"
THREAD_HISTORY = 50
"""Messages of a thread read back when its conversation is not in memory."""


def channel_conversation(guild_id: int | None, channel_id: int) -> ConversationKey:
    """A DM or a thread: the whole channel is one conversation."""
    workspace = str(guild_id) if guild_id is not None else DM_WORKSPACE
    return ConversationKey(PLATFORM, workspace, str(channel_id))


def chain_conversation(guild_id: int, channel_id: int, root_id: int) -> ConversationKey:
    """A reply chain in a guild channel, named by its first message."""
    return ConversationKey(PLATFORM, str(guild_id), str(channel_id), str(root_id))


def ask_conversation(guild_id: int, channel_id: int, user_id: int) -> ConversationKey:
    """``/ask`` in a guild channel: one running conversation per user there."""
    return ConversationKey(PLATFORM, str(guild_id), str(channel_id), f"ask:{user_id}")


async def parent_of(message: discord.Message, budget: Budget) -> discord.Message | None:
    """The message ``message`` replies to: from the gateway payload when it came
    with it, else fetched (None if it is gone or unreadable)."""
    reference = message.reference
    if reference is None or reference.message_id is None:
        return None
    if isinstance(reference.resolved, discord.Message):
        return reference.resolved
    if isinstance(reference.resolved, discord.DeletedReferencedMessage):
        return None
    if reference.channel_id != message.channel.id:
        return None  # a forward or cross-channel reference is not a conversation
    await budget.acquire(GLOBAL_SCOPE)
    try:
        return await message.channel.fetch_message(reference.message_id)
    except (discord.NotFound, discord.Forbidden):
        return None


async def chain_turns(
    message: discord.Message, bot_id: int, *, depth: int, budget: Budget
) -> tuple[list[Turn], int]:
    """The turns of the reply chain above ``message`` (oldest first) and the id of
    the oldest message reached, which names the chain's conversation."""
    turns: list[Turn] = []
    root = message.id
    current = message
    for _ in range(depth):
        parent = await parent_of(current, budget)
        if parent is None:
            break
        root = parent.id
        turn = _turn(parent, bot_id)
        if turn is not None:
            turns.append(turn)
        current = parent
    turns.reverse()
    return turns, root


async def channel_turns(
    channel: discord.abc.Messageable,
    bot_id: int,
    *,
    before: discord.abc.Snowflake,
    after: discord.abc.Snowflake | None,
    limit: int,
    budget: Budget,
) -> list[Turn]:
    """A thread's latest messages between ``after`` and ``before``, oldest first."""
    await budget.acquire(GLOBAL_SCOPE)
    turns = []
    try:
        async for message in channel.history(
            limit=limit, before=before, after=after, oldest_first=False
        ):
            turn = _turn(message, bot_id)
            if turn is not None:
                turns.append(turn)
    except (discord.NotFound, discord.Forbidden) as exc:
        log.info("could not read channel %s back: %s", getattr(channel, "id", "?"), exc)
    turns.reverse()
    return turns


def _turn(message: discord.Message, bot_id: int) -> Turn | None:
    if message.author.id == bot_id:
        text = answer_of(message)
        return Turn("assistant", None, text) if text else None
    text = strip_mention(message.content, bot_id)
    return Turn("user", str(message.author.id), text) if text else None


def command_conversation(interaction: discord.Interaction[Any]) -> ConversationKey:
    """``/ask`` and ``/reset``: the DM or thread, else the user's own in the channel."""
    channel_id = interaction.channel_id or 0
    if interaction.guild_id is None or isinstance(interaction.channel, discord.Thread):
        return channel_conversation(interaction.guild_id, channel_id)
    return ask_conversation(interaction.guild_id, channel_id, interaction.user.id)


def lineage(channel: object) -> tuple[int, ...]:
    """The channel, then its parent (threads) and category, as far as they are known:
    a thread counts as its parent channel for rules, access and ``/model``."""
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        category = parent.category_id if parent is not None else None
        return _ids(channel.id, channel.parent_id, category)
    if isinstance(channel, discord.abc.GuildChannel):
        return _ids(channel.id, channel.category_id)
    channel_id = getattr(channel, "id", None)  # a partial channel: only its id is known
    return (channel_id,) if isinstance(channel_id, int) else ()


def _ids(*ids: int | None) -> tuple[int, ...]:
    return tuple(i for i in ids if i is not None)


@dataclass(frozen=True)
class Found:
    """A message's conversation, as far as it is known before the message is claimed."""

    key: ConversationKey
    continuing: bool
    """It continues a conversation (a thread, a DM, a reply) rather than starting
    a reply chain."""
    chain: Sequence[Turn] = ()
    """A reply chain read back from Discord: nothing of it was known."""
    thread: discord.Thread | None = None
    """The thread it was written in, whose history may have to be read back."""


class Conversations:
    def __init__(self, client: discord.Client, state: State, settings: DiscordSettings) -> None:
        self._client = client
        self._state = state
        self._depth = settings.discord_chain_depth

    @property
    def _me(self) -> int:
        user = self._client.user
        if user is None:
            raise RuntimeError("the Discord client is not logged in")
        return user.id

    async def of(self, message: discord.Message) -> Found:
        """The message's conversation: one read when a message of its reply chain is
        known, else the chain read upwards (its oldest message names it)."""
        channel = message.channel
        guild = message.guild
        if guild is None or isinstance(channel, discord.Thread):
            thread = channel if isinstance(channel, discord.Thread) else None
            return Found(
                channel_conversation(guild.id if guild else None, channel.id), True, (), thread
            )
        reference = message.reference
        if reference is None or reference.message_id is None or reference.channel_id != channel.id:
            return Found(chain_conversation(guild.id, channel.id, message.id), False)
        known = await self._state.chains.lookup(PLATFORM, str(reference.message_id))
        if known is not None:
            return Found(known, True)
        turns, root = await chain_turns(
            message, self._me, depth=self._depth, budget=self._state.budget
        )
        return Found(chain_conversation(guild.id, channel.id, root), True, turns)

    async def keep(self, message: discord.Message, found: Found) -> None:
        """``message`` is this process's to deal with: read its thread back, keep
        the chain read back, and remember which chain it belongs to."""
        if found.thread is not None:
            await self.recall_thread(found.key, found.thread, before=message)
            return
        if message.guild is None:
            return  # a DM: the channel is the conversation
        if found.chain and not await remembers(self._state, found.key):
            await store_recalled(
                self._state, found.key, found.chain, f"reply chain {found.key.thread}"
            )
        await self.remember(found.key, message.id)

    async def remember(self, conversation: ConversationKey, message_id: int) -> None:
        """Replies to ``message_id`` continue ``conversation`` (a reply chain)."""
        await self._state.chains.remember(conversation, str(message_id))

    async def recall_thread(
        self, conversation: ConversationKey, thread: discord.Thread, before: discord.abc.Snowflake
    ) -> int:
        """A thread the bot has no memory of (it expired, or the bot was just called
        in): read its recent messages back once, never past a ``/reset``."""

        async def fetch() -> list[Turn]:
            try:
                since = await self._state.resets.since(conversation)
            except REDIS_FAILURES:
                return []  # nowhere to keep it, and no telling what was forgotten
            return await channel_turns(
                thread,
                self._me,
                before=before,
                after=discord.Object(int(since)) if since else None,
                limit=THREAD_HISTORY,
                budget=self._state.budget,
            )

        return await recall(self._state, conversation, fetch, f"thread {thread.id}")
