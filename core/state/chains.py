"""Which conversation a platform message belongs to, for reply-chain platforms.

On Discord a conversation in a guild channel is a chain of replies: a reply to
any message of the chain (the bot's or the user's) continues it. Walking the
chain up through the platform's API costs one request per message; this index
answers with one Redis read instead. The adapter remembers each message of a
chain as it sees or writes it, and a reply looks its parent up.

The index is a cache of what the platform can tell: a message not found (never
remembered, expired with its conversation after ``ttl``, or Redis unavailable)
makes the adapter read the chain back from the platform. So neither call ever
raises for Redis: ``remember`` and ``lookup`` sit on a reply's path, each is
bounded by ``timeout`` (``REPLY_PATH_TIMEOUT``), and a paused Redis degrades
exactly like a refused connection: nothing remembered (logged), nothing found.
"""

from __future__ import annotations

import json
import logging

from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, bounded
from core.state.keys import ConversationKey, Keys
from core.state.topology import RedisClient

log = logging.getLogger(__name__)


class ReplyChains:
    def __init__(
        self, redis: RedisClient, keys: Keys, *, ttl: int, timeout: float = REPLY_PATH_TIMEOUT
    ) -> None:
        """``ttl``: seconds a message is remembered, as long as its conversation lives
        (``CONVERSATION_TTL``), since the index is worth nothing without it."""
        if ttl <= 0 or timeout <= 0:
            raise ValueError("ttl and timeout must be positive")
        self._redis = redis
        self._keys = keys
        self.ttl = ttl
        self.timeout = timeout

    async def remember(self, conversation: ConversationKey, *message_ids: str) -> None:
        """Note that ``message_ids`` (of ``conversation.platform``) belong to
        ``conversation``. Never raises for Redis: a message not remembered is read
        back from the platform when a reply to it comes."""
        if not message_ids:
            return
        value = json.dumps(
            [conversation.workspace, conversation.channel, conversation.thread],
            separators=(",", ":"),
        )
        platform = conversation.platform
        try:
            await bounded(self._set(platform, value, message_ids), self.timeout)
        except REDIS_FAILURES as exc:
            log.warning("could not remember messages %s: %s", ", ".join(message_ids), exc)

    async def _set(self, platform: str, value: str, message_ids: tuple[str, ...]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for message_id in message_ids:
                pipe.set(self._keys.chain(platform, message_id), value, ex=self.ttl)
            await pipe.execute()

    async def lookup(self, platform: str, message_id: str) -> ConversationKey | None:
        """The conversation ``message_id`` belongs to; None when it is not known or
        Redis can't say (never raises for Redis)."""
        try:
            key = self._keys.chain(platform, message_id)
            raw = await bounded(self._redis.get(key), self.timeout)
        except REDIS_FAILURES as exc:
            log.warning("could not look up message %s: %s", message_id, exc)
            return None
        if raw is None:
            return None
        try:
            workspace, channel, thread = json.loads(raw)
        except (ValueError, TypeError):
            log.warning("dropping an unreadable chain entry of message %s", message_id)
            return None
        return ConversationKey(platform, str(workspace), str(channel), str(thread))


__all__ = ["ReplyChains"]
