"""The rate limits the fake enforces (``RateLimits``, editable by tests) and the fixed
window that counts one bucket's requests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """``limit`` requests per fixed window of ``per`` seconds, which starts at first use."""

    limit: int
    per: float
    scope: str = "user"
    """``X-RateLimit-Scope`` of its 429s: ``user`` or ``shared``."""


@dataclass
class RateLimits:
    """Numbers the fake enforces; Discord documents few of them, so tests may change any."""

    channel_messages: Limit = Limit(5, 5.0)
    """Per channel, shared by message sends and edits (observed on Discord)."""
    interaction_webhook: Limit = Limit(5, 2.0)
    """Per interaction token, for followups and edits/deletes of its messages."""
    global_per_second: int = 50
    """Per bot token, all bot-authenticated routes; interaction routes are exempt."""
    route_default: Limit = Limit(50, 1.0)
    """Every other route, per route and major parameter."""
    shared_message_bucket_hash: bool = False
    """True: sends and edits report ONE ``X-RateLimit-Bucket``, so discord.py paces them
    together once it has seen both routes (a 429 or so while it learns). Discord reports
    two, so discord.py can't (the default)."""
    enabled: bool = True


@dataclass
class Window:
    limit: int
    per: float
    start: float | None = None
    count: int = 0

    def hit(self, now: float) -> tuple[bool, int, float]:
        """(allowed, remaining, reset_after); a denied hit is not counted."""
        if self.start is None or now >= self.start + self.per:
            self.start, self.count = now, 0
        reset_after = self.start + self.per - now
        if self.count >= self.limit:
            return False, 0, reset_after
        self.count += 1
        return True, self.limit - self.count, reset_after


def bucket_hash(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:32]
