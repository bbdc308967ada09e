"""Recalling a conversation the bot has no memory of, from the platform.

Redis, not the platform, is the bot's memory: history APIs are heavily rate
limited (Slack's ``conversations.replies``) or need a permission the bot may
lack. But a thread the bot is called into, or one whose memory expired or
was lost with Redis, would otherwise be answered without its context; so it
is read back once, and only when the store has nothing for it. Without Redis
there is nowhere to keep it, and the reply goes on without.

Adapters supply how to read their platform's messages (``Fetch``); the rule of
when, and what to do with failures, is this one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from core.state.connection import REDIS_FAILURES
from core.state.conversations import Turn
from core.state.keys import ConversationKey
from core.state.store import State

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[Sequence[Turn]]]
"""The conversation's earlier messages as turns, oldest first; an empty list
when the platform would not say (the adapter logs its own API errors)."""


async def remembers(state: State, conversation: ConversationKey, *, default: bool = True) -> bool:
    """Whether the store has turns of ``conversation``; ``default`` when Redis
    can't say (yes: nothing is fetched or stored twice)."""
    try:
        return await state.conversations.exists(conversation)
    except REDIS_FAILURES:
        return default


async def recall(state: State, conversation: ConversationKey, fetch: Fetch, what: str) -> int:
    """Read ``conversation`` back from its platform unless the store has it; the
    number of turns stored. ``what`` names it in the log ("thread 171.2")."""
    if await remembers(state, conversation):
        return 0
    turns = await fetch()
    return await store_recalled(state, conversation, turns, what)


async def store_recalled(
    state: State, conversation: ConversationKey, turns: Sequence[Turn], what: str
) -> int:
    """Keep turns read back from the platform (see ``recall``); the number stored."""
    if not turns:
        return 0
    try:
        await state.conversations.append(conversation, *turns)
    except REDIS_FAILURES as exc:
        log.warning("could not store the recalled %s: %s", what, exc)
        return 0
    log.info("rebuilt %d turns of %s from %s", len(turns), what, conversation.platform)
    return len(turns)
