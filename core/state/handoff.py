"""Human handoff: once an agent answers in a thread, the bot stays quiet there.

In customer-service channels the bot answers every customer message until a
human agent steps in; from then on the thread is the agent's. The mark is a
Redis key per conversation, shared by every replica, expiring after the
channel's quiet time (or never, when it is 0: then only ``resume`` ends it).

Without Redis nobody can know whether a thread was handed over, so every
method raises one of ``REDIS_FAILURES`` when Redis is unreachable, and a
``TimeoutError`` (one of them) when it does not answer within ``timeout``
(``REPLY_PATH_TIMEOUT``): a paused server costs the event at most that long.
Guessing here would be wrong either way (answering over a human agent, or
ignoring a customer), so the choice is the caller's: an adapter should catch
``REDIS_FAILURES`` and, for ``is_handed_over``, stay quiet in a thread that
could have been handed over (an agent is watching it) but answer a message
that starts a conversation; for ``hand_over`` and ``resume``, log and go on
(``resume`` should tell the agent it did not take).
"""

from __future__ import annotations

from core.state.connection import REPLY_PATH_TIMEOUT, bounded
from core.state.keys import ConversationKey, Keys
from core.state.topology import RedisClient


class Handoffs:
    def __init__(
        self, redis: RedisClient, keys: Keys, *, timeout: float = REPLY_PATH_TIMEOUT
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.timeout = timeout

    def _key(self, conversation: ConversationKey) -> str:
        return self._keys.handoff(conversation)

    async def hand_over(self, conversation: ConversationKey, quiet_minutes: float) -> None:
        """An agent spoke: keep quiet for ``quiet_minutes`` after this (0: until resumed).
        Every agent message pushes the quiet time back."""
        seconds = round(quiet_minutes * 60)
        key = self._key(conversation)
        if seconds > 0:
            await bounded(self._redis.set(key, "1", ex=seconds), self.timeout)
        else:
            await bounded(self._redis.set(key, "1"), self.timeout)

    async def is_handed_over(self, conversation: ConversationKey) -> bool:
        return bool(await bounded(self._redis.exists(self._key(conversation)), self.timeout))

    async def resume(self, conversation: ConversationKey) -> bool:
        """The bot may answer again; False if it was not handed over."""
        return bool(await bounded(self._redis.delete(self._key(conversation)), self.timeout))
