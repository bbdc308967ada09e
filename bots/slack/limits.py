"""Slack's budget scopes: what each Web API call spends, and their default limits.

A call's scopes are named here (``scope``, ``scopes``), so a sink declares
exactly the scopes of the methods it will call, and the listeners and the
finaliser spend the same ones: ``slack:<team>:<method>``, and
``slack:<team>:chat.postMessage:<channel>``. The limits of their patterns are
learnt from Slack's documentation and observed behaviour
(``shared/platform-facts.md``); ``RATE_LIMITS`` overrides them per pattern,
because Slack's tiers are "N+ per minute". ``chatrelay run`` merges them with
the other adapters' defaults (``bots.cli.platform_limits``) and hands them to
``core.state.store.open_state``.
"""

from __future__ import annotations

from core.reply import Limit, RateLimit, Window


def scope(team: str, method: str, channel: str) -> str:
    """The budget scope of ``method``: per workspace, and per channel for posts
    (Slack limits ``chat.postMessage`` to about one per second per channel)."""
    if method == "chat.postMessage":
        return f"slack:{team}:chat.postMessage:{channel}"
    return f"slack:{team}:{method}"


def scopes(team: str, method: str, channel: str) -> tuple[str, ...]:
    """Every budget scope a call of ``method`` spends: ``scope``'s, and for a post
    also the workspace's, because Slack caps a workspace's posts too (several
    hundred a minute) and a burst of first posts over twenty channels, each
    within its channel's 1/s, went over it (bench/load.py at 200 mentions)."""
    if method == "chat.postMessage":
        return (scope(team, method, channel), f"slack:{team}:chat.postMessage")
    return (scope(team, method, channel),)


TIER_WINDOW = 61.0
"""Seconds in which a Slack tier's "N per minute" is counted (``RATE_TIER_WINDOW``):
the minute, plus a second for a call's time in flight. A window lets a whole
minute's calls go at once, so a burst that reaches Slack late and the first
calls of the next window that reach it early must still fall in different
minutes; a second covers the latency of a burst of calls on a healthy link."""


STATUS_PER_MINUTE = 600
"""``assistant.threads.setStatus`` calls per minute per workspace
(``SLACK_STATUS_PER_MINUTE``). Slack calls the limit "special" and publishes no
number; a status is the cheapest thing a reply can show, so it is budgeted
generously, and a 429 on one only skips that status (``core.reply.engine``)."""


POSTS_PER_WORKSPACE = 290
"""``chat.postMessage`` calls in any tier window per workspace: under the fake's
assumed 300 a minute, with room for calls that reach Slack late."""


def default_limits(
    tier_window: float = TIER_WINDOW, status_per_minute: int = STATUS_PER_MINUTE
) -> dict[str, RateLimit]:
    """The default limit of every scope the Slack adapter calls in, Slack's tiers
    counted in windows of ``tier_window`` seconds.

    Which limiter where: a ``Window`` for the one-off calls of a reply (a
    stream's start and stop, an assistant thread's status, title and prompts),
    because each is worth most as soon as it can happen and a window lets all N
    go at once (GCRA lets 5 go, then one every 4 s); GCRA (``Limit``) for the
    calls that *stream*, edits and appends from every reply in the workspace,
    because a window would let a minute's worth through in seconds and then
    freeze every reply until the minute ends, while GCRA gives each reply its
    share evenly; GCRA too for ``chat.postMessage`` (Slack documents a rate, 1/s
    per channel, not a count per window).

    Every limit keeps one call under Slack's N: Slack may count a call we don't
    (a request whose answer was lost and was sent again), and a call can reach
    it later than its slot and bunch up with the next one. GCRA admits
    ``burst - 1 + count`` calls into any window of ``per`` seconds, a window
    ``count``.
    """
    return {
        "slack:*:chat.update": Limit(45, 60, burst=5),  # Tier 3: 50/min
        "slack:*:chat.postMessage:*": Limit(2, 3),  # per channel: 1/s with short bursts
        # ... and per workspace: "several hundred a minute", no number published
        # (the fake assumes 300). A window: first posts are one-offs, best at once.
        "slack:*:chat.postMessage": Window(POSTS_PER_WORKSPACE, tier_window),
        "slack:*:chat.startStream": Window(19, tier_window),  # Tier 2: 20/min
        "slack:*:chat.appendStream": Limit(90, 60, burst=10),  # Tier 4: 100/min
        "slack:*:chat.stopStream": Window(19, tier_window),  # Tier 2: 20/min
        # "special": the status as a setting, its siblings (title, prompts) as Tier 2.
        "slack:*:assistant.threads.setStatus": Window(status_per_minute, tier_window),
        "slack:*:assistant.threads.*": Window(19, tier_window),
    }


DEFAULT_LIMITS: dict[str, RateLimit] = default_limits()
"""Scope pattern -> limit with the default settings, first match wins."""
