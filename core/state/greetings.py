"""Greeting a user once in a while, by one replica only (Slack's DM greeting).

``claim`` is a ``SET NX`` with an expiry on the user: the first caller anywhere
gets True and greets; every caller after, until ``every`` seconds have passed,
gets False. Bounded by ``timeout`` (``REPLY_PATH_TIMEOUT``); raises one of
``REDIS_FAILURES`` when Redis can't say, and the caller decides (not greeting
is the safe choice: greeting on every visit would be worse than none).
"""

from __future__ import annotations

from core.state.connection import REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.topology import RedisClient


class Greetings:
    def __init__(
        self, redis: RedisClient, keys: Keys, *, timeout: float = REPLY_PATH_TIMEOUT
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.timeout = timeout

    async def claim(self, platform: str, workspace: str, user: str, *, every: int) -> bool:
        """True when ``user`` was not greeted in the last ``every`` seconds (and now is)."""
        key = self._keys.greeted(platform, workspace, user)
        return bool(await bounded(self._redis.set(key, "1", nx=True, ex=every), self.timeout))


__all__ = ["Greetings"]
