"""Discord's default rate limits, per budget scope pattern.

The scopes are named by ``bots.discord.ratelimits`` (``channel_scope``,
``interaction_scope``, ``GLOBAL_SCOPE``); these are their patterns. Discord
says not to hard-code its limits, so these are observed ones, kept one call
under: ``RATE_LIMITS`` overrides them per pattern, and
``bots.discord.ratelimits.RateLimitLearner`` tightens them from Discord's
headers. ``chatrelay run`` merges them with the other adapters' defaults
(``bots.cli.platform_limits``) and hands them to ``core.state.store.open_state``.

This module imports only ``core.reply.budget``: composing the limits must not load
discord.py or aiohttp.
"""

from __future__ import annotations

from core.reply import Limit, RateLimit

DEFAULT_LIMITS: dict[str, RateLimit] = {
    # Observed: 5 per 5 s per channel (sends and edits), 50/s per bot token,
    # about 5 edits per 2 s per interaction token. GCRA, because replies
    # stream edits: spacing them keeps every reply moving. (Discord counts sends
    # and edits in one channel together while discord.py paces them as separate
    # buckets, so its own header-based waiting doesn't cover that.)
    "discord:channel:*": Limit(4, 5),
    "discord:interaction:*": Limit(4, 2),
    "discord:global": Limit(40, 1, burst=10),
}
"""Scope pattern -> limit, first match wins."""
