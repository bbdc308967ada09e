"""Where ``/reset`` was last used in a conversation.

A conversation lost from memory may be read back from the platform (a Discord
thread's recent history); the mark says where the user last asked the bot to
forget, so reading back never brings that back. One key per conversation,
holding the id of the message (or interaction) that reset it, expiring with
the conversation (``CONVERSATION_TTL``).

Both calls sit on a reply's path and are bounded by ``timeout``
(``REPLY_PATH_TIMEOUT``): ``mark`` raises one of ``REDIS_FAILURES`` (the reset
itself needs Redis anyway), ``since`` answers None when Redis can't say (read
back everything, as before any reset).
"""

from __future__ import annotations

from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, bounded
from core.state.keys import ConversationKey, Keys
from core.state.topology import RedisClient


class ResetMarks:
    def __init__(
        self, redis: RedisClient, keys: Keys, *, ttl: int, timeout: float = REPLY_PATH_TIMEOUT
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl = ttl
        self.timeout = timeout

    async def mark(self, conversation: ConversationKey, message_id: str) -> None:
        """``conversation`` was reset at ``message_id``: never read back before it."""
        key = self._keys.reset_mark(conversation)
        await bounded(self._redis.set(key, message_id, ex=self.ttl), self.timeout)

    async def since(self, conversation: ConversationKey) -> str | None:
        """The message the conversation was last reset at; None when it never was
        (within ``ttl``) or Redis can't say."""
        try:
            raw = await bounded(self._redis.get(self._keys.reset_mark(conversation)), self.timeout)
        except REDIS_FAILURES:
            return None
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)


__all__ = ["ResetMarks"]
