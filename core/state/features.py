"""Platform features a workspace turned out to lack, shared by every replica.

Slack's native streaming (``chat.startStream``) is refused by some workspaces;
the first refusal is noted for a while (``ttl``) so no replica tries again on
every reply. A note that expires costs one more refused try.

Both calls are bounded by ``timeout`` (``REPLY_PATH_TIMEOUT``) and raise one of
``REDIS_FAILURES`` when Redis can't say; the caller decides what to assume.
"""

from __future__ import annotations

from core.state.connection import REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.topology import RedisClient


class MissingFeatures:
    def __init__(
        self, redis: RedisClient, keys: Keys, *, timeout: float = REPLY_PATH_TIMEOUT
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.timeout = timeout

    async def lacks(self, platform: str, workspace: str, feature: str) -> bool:
        key = self._keys.missing_feature(platform, workspace, feature)
        return bool(await bounded(self._redis.exists(key), self.timeout))

    async def note(self, platform: str, workspace: str, feature: str, *, ttl: int) -> None:
        """``workspace`` lacks ``feature``: say so for the next ``ttl`` seconds."""
        key = self._keys.missing_feature(platform, workspace, feature)
        await bounded(self._redis.set(key, "1", ex=ttl), self.timeout)


__all__ = ["MissingFeatures"]
