"""Slack's limits as the fake enforces them: the per-method rate limits (sliding
windows, ``DEFAULT_LIMITS``) and the sizes of texts, blocks and streams. Numbers
Slack doesn't publish are marked *assumed* (see the package doc)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """At most ``count`` accepted calls in any ``window`` seconds (a sliding window)."""

    count: int
    window: float = 60.0


TIER_1 = Limit(1)
TIER_2 = Limit(20)
TIER_3 = Limit(50)
TIER_4 = Limit(100)


POST_MESSAGE_WORKSPACE = "chat.postMessage/workspace"
"""Key in ``limits`` for the team-wide chat.postMessage cap (the plain key is per channel)."""


DEFAULT_LIMITS: Mapping[str, Limit | None] = {
    "auth.test": TIER_4,
    # Tier 1 is "1+ per minute"; 10 in a minute lets multi-connection and reconnect
    # tests run, which Slack tolerates in practice (assumed).
    "apps.connections.open": Limit(10),
    # "1 per second per channel", with "generous bursts" (Slack's words): 3 in any 3 s
    # keeps the 1/s average and allows a burst of 3 (the burst size is assumed).
    "chat.postMessage": Limit(3, 3.0),
    POST_MESSAGE_WORKSPACE: Limit(300),
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.startStream": TIER_2,
    "chat.appendStream": TIER_4,
    "chat.stopStream": TIER_2,
    # Slack documents "special" limits for assistant.threads.*; the numbers are
    # assumed: the status as generous as the load issue budgets it (600 a minute),
    # its siblings as Tier 3.
    "assistant.threads.setStatus": Limit(600),
    "assistant.threads.setSuggestedPrompts": TIER_3,
    "assistant.threads.setTitle": TIER_3,
    "conversations.replies": TIER_3,
    "conversations.history": TIER_3,
    "users.info": TIER_4,
    "usergroups.users.list": TIER_2,
    "reactions.add": TIER_3,
    "reactions.remove": TIER_2,
}


STREAM_METHODS = frozenset({"chat.startStream", "chat.appendStream", "chat.stopStream"})
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_HEADER_TEXT = 150
MAX_MARKDOWN_BLOCKS_TEXT = 12_000
MAX_MARKDOWN_TEXT = 12_000
STREAM_BYTE_CAP = 11_000
"""Bytes of markdown one streamed message takes before appends fail (*assumed*)."""
MAX_LOADING_MESSAGES = 10
MAX_SUGGESTED_PROMPTS = 4
STATUS_AUTO_CLEAR = 120.0


class SlidingWindows:
    """Per-key lists of accepted call times; old ones drop out of the window lazily."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, ...], deque[float]] = {}

    def wait(self, key: tuple[str, ...], limit: Limit, now: float) -> float:
        """Seconds until a slot frees (0 when one is free now)."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - limit.window:
            hits.popleft()
        if len(hits) < limit.count:
            return 0.0
        return max(hits[0] + limit.window - now, 0.0)

    def hit(self, key: tuple[str, ...], now: float) -> None:
        self._hits.setdefault(key, deque()).append(now)

    def clear(self) -> None:
        self._hits.clear()
