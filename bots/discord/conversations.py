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
back once from Discord: the reply chain upwards, or the thread's recent
history. Without the MESSAGE_CONTENT intent other people's messages read as
empty unless they mention the bot; those are skipped.
"""

from __future__ import annotations

import logging

import discord

from bots.discord.format import answer_of, strip_mention
from bots.discord.ratelimits import GLOBAL_SCOPE
from core.reply import Budget
from core.state import ConversationKey, Turn

log = logging.getLogger(__name__)

PLATFORM = "discord"
DM_WORKSPACE = "dm"


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
