"""Human handoff: once an agent answers in a thread, the bot stays quiet there.

In customer-service channels the bot answers every customer message until a
human agent steps in; from then on the thread is the agent's. The mark is a
Redis key per conversation, shared by every replica, expiring after the
channel's quiet time (or never, when it is 0: then only ``resume`` ends it).
"""

from __future__ import annotations

from redis.asyncio import Redis

from core.state.keys import ConversationKey, Keys


class Handoffs:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def _key(self, conversation: ConversationKey) -> str:
        return self._keys.handoff(conversation)

    async def hand_over(self, conversation: ConversationKey, quiet_minutes: float) -> None:
        """An agent spoke: keep quiet for ``quiet_minutes`` after this (0: until resumed).
        Every agent message pushes the quiet time back."""
        seconds = round(quiet_minutes * 60)
        if seconds > 0:
            await self._redis.set(self._key(conversation), "1", ex=seconds)
        else:
            await self._redis.set(self._key(conversation), "1")

    async def is_handed_over(self, conversation: ConversationKey) -> bool:
        return bool(await self._redis.exists(self._key(conversation)))

    async def resume(self, conversation: ConversationKey) -> bool:
        """The bot may answer again; False if it was not handed over."""
        return bool(await self._redis.delete(self._key(conversation)))
