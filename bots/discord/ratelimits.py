"""Discord's rate limits, as scopes of chatrelay's shared budget.

Who decides when a call may happen: **our budget, not discord.py.** discord.py
paces each route bucket from the ``X-RateLimit-*`` headers it has seen, and on
a 429 it sleeps ``Retry-After`` and retries (up to five times) inside the call.
That is right for one process and one route, and wrong for streaming:

- Discord's per-channel limit (about 5 per 5 s) is shared by message sends AND
  edits, which report different bucket hashes, so discord.py paces them apart
  and collects 429s when several replies stream into one channel;
- its buckets live in one process, while replicas share channels;
- a call it holds back or retries stalls one reply while the others keep
  spending the limit.

So every call a reply makes first waits for its scopes in the shared (Redis)
budget, whose defaults stay under Discord's limits (``discord:channel:<id>``,
``discord:interaction:<token digest>``, ``discord:global``). discord.py's own
pacing then never has to act; its retry remains the last resort for the one
call that still meets a 429 (another bot process on the same token, a limit
lower than the defaults).

And the budget learns from Discord as it goes: ``RateLimitLearner`` watches
every response discord.py receives (an ``aiohttp`` trace, so it sees even the
429s discord.py absorbs) and blocks the matching scope for every reply and
every replica: on a 429 until its ``Retry-After``, and when a bucket reports
``X-RateLimit-Remaining: 0`` until ``X-RateLimit-Reset-After``.

It also learns limits, **only ever tighter** than the configured ones. A
header describes one route's bucket (a channel's sends, or its edits), not the
send-and-edit limit that binds the channel, so it can never loosen a scope:
but when a bucket of a scope reports fewer calls than the scope's limit lets
through (``X-RateLimit-Limit: 3`` where ``discord:channel:*`` allows 4 per
5 s), the scope must pace by it. The learnt limit keeps one call under the
reported one, as the defaults do: ``Limit - 1`` calls per window (one call per
one and a half windows when the bucket allows only one), the window being
``X-RateLimit-Reset-After`` of a bucket's first call and never shorter than
the configured limit's. It goes to ``core.state.learned`` (a Redis hash with
an expiry per entry, one entry per scope and ``X-RateLimit-Bucket``) so every
replica and shard paces by it; a bucket that reports a limit no tighter than
the configured one drops its entry. Interaction scopes learn the same way; the
global scope does not (Discord sends no limit for it).

And it counts the answers Discord holds against the address (401, 403 and
429s other than ``X-RateLimit-Scope: shared``) for the invalid-request guard
(``bots.discord.guard``), which slows every replica down long before the ban.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Mapping
from types import SimpleNamespace

import aiohttp

from bots.discord.guard import InvalidRequestGuard, is_invalid
from core.reply import Budget, Limit, RateLimit
from core.state.learned import AdaptiveLimits, LearnedLimits, is_tighter

log = logging.getLogger(__name__)

GLOBAL_SCOPE = "discord:global"
"""50 requests per second per bot token (interaction webhooks are exempt)."""

_CHANNEL_MESSAGE = re.compile(r"/channels/(\d+)/messages(?:/\d+)?/?$")
_WEBHOOK = re.compile(r"/webhooks/\d+/([^/]+)(?:/messages/[^/]+)?/?$")
_TOKEN_IN_PATH = re.compile(r"/(webhooks|interactions)/\d+/[^/]+")
_ID = re.compile(r"/\d+(?=/|$)")
_API_VERSION = re.compile(r"^/api/v\d+(?=/)")
_REACTION = re.compile(r"/reactions/[^/]+")


def channel_scope(channel_id: int) -> str:
    """Sends and edits in one channel (a thread is a channel of its own)."""
    return f"discord:channel:{channel_id}"


def interaction_scope(token: str) -> str:
    """Calls on one interaction's webhook. Keyed by a digest: the token is a
    credential (anyone holding it may post as the bot for 15 minutes) and scope
    names end up in Redis keys, logs and metrics."""
    return f"discord:interaction:{token_digest(token)}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:20]


def route_template(path: str) -> str:
    """``path`` as the route it belongs to, for logs: ids become ``{id}`` and the
    token of a webhook or interaction ``{token}``
    (``/api/v10/webhooks/{id}/{token}/messages/@original``). The token is a
    credential; the route, with the bucket and the scope logged next to it, says
    what was limited without it."""
    return _ID.sub("/{id}", _TOKEN_IN_PATH.sub(r"/\1/{id}/{token}", path))


def route_name(method: str, path: str) -> str:
    """The call as a metric label: ``PATCH /channels/{id}/messages/{id}``, no API
    version, no id, no token, no emoji."""
    route = _API_VERSION.sub("", route_template(path))
    return f"{method} {_REACTION.sub('/reactions/{emoji}', route)}"


def scope_of(method: str, path: str) -> str | None:
    """The budget scope a REST call spends, for the calls replies make."""
    if method in ("POST", "PATCH"):
        found = _CHANNEL_MESSAGE.search(path)
        if found:
            return channel_scope(int(found.group(1)))
    if method in ("POST", "PATCH", "DELETE"):
        found = _WEBHOOK.search(path)
        if found:
            return interaction_scope(found.group(1))
    return None


class RateLimitLearner:
    """Feeds what Discord's answers say about rate limits into the shared budget."""

    def __init__(
        self,
        budget: Budget,
        *,
        learned: LearnedLimits | None = None,
        limits: AdaptiveLimits | None = None,
        guard: InvalidRequestGuard | None = None,
    ) -> None:
        """``learned``: where learnt limits go (none: nothing is learnt); ``limits``:
        the table whose configured limits they tighten; ``guard``: counts the
        invalid answers."""
        self._budget = budget
        self._learned = learned
        self._limits = limits
        self._guard = guard
        self.rate_limited = 0
        """429s seen (discord.py retried them, or raised them to the sink)."""
        self.exhausted = 0
        """Answers saying a paced bucket has no call left in its window."""
        self.invalid = 0
        """Answers Discord counts toward its invalid-request limit."""
        self.on_error: Callable[[str, str], None] | None = None
        """Told of every answer of 400 or more: ``route_name`` and the status (metrics)."""

    def trace_config(self) -> aiohttp.TraceConfig:
        """For ``discord.Client(http_trace=...)``: discord.py's REST and webhook calls
        share the client's session, so one trace sees them all."""
        config = aiohttp.TraceConfig()
        config.on_request_end.append(self._on_request_end)
        return config

    async def _on_request_end(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        response = params.response
        try:
            await self.learn(params.method, params.url.path, response.status, response.headers)
        except Exception:  # a safety net must not break the call it watches
            log.exception("could not learn from a Discord rate limit answer")

    async def learn(self, method: str, path: str, status: int, headers: Mapping[str, str]) -> None:
        """Block the call's scope as long as Discord's answer says to, tighten its
        limit when the answer reports a tighter bucket, count invalid answers."""
        if status >= 400 and self.on_error is not None:
            self.on_error(route_name(method, path), str(status))
        limit_scope = headers.get("X-RateLimit-Scope")
        if is_invalid(status, limit_scope):
            self.invalid += 1
            if self._guard is not None:
                await self._guard.record(status)
        scope = GLOBAL_SCOPE if headers.get("X-RateLimit-Global") else scope_of(method, path)
        if status == 429:
            self.rate_limited += 1
            wait = max(
                _seconds(headers.get("Retry-After")),
                _seconds(headers.get("X-RateLimit-Reset-After")),
            )
            log.warning(
                "Discord answered 429 to %s %s (bucket %s, %s scope): %s blocked for %.2fs",
                method,
                route_template(path),
                headers.get("X-RateLimit-Bucket", "unknown"),
                limit_scope or "unknown",
                scope or "no paced scope",
                wait,
            )
            if scope is not None:
                await self._budget.block(scope, wait)
                if limit_scope != "shared":  # a shared resource's limit is not our bucket's
                    await self._learn_limit(scope, headers)
            return
        if scope is not None and headers.get("X-RateLimit-Remaining") == "0":
            self.exhausted += 1
            await self._budget.block(scope, _seconds(headers.get("X-RateLimit-Reset-After")))
        if scope is not None:
            await self._learn_limit(scope, headers)

    async def _learn_limit(self, scope: str, headers: Mapping[str, str]) -> None:
        learned = self._learned
        bucket = headers.get("X-RateLimit-Bucket")
        reported = _count(headers.get("X-RateLimit-Limit"))
        if learned is None or scope == GLOBAL_SCOPE or not bucket or reported is None:
            return
        configured = self._limits.configured(scope) if self._limits is not None else None
        remaining = _count(headers.get("X-RateLimit-Remaining"))
        fresh = remaining == reported - 1  # the bucket's first call: Reset-After is its window
        if configured is None and not fresh:
            return  # no window to go by
        limit: Limit | None = limit_from_headers(
            reported, _seconds(headers.get("X-RateLimit-Reset-After")), configured
        )
        if limit is not None and not is_tighter(limit, configured):
            limit = None
        before = learned.get(scope)
        await learned.record(scope, bucket, limit)
        after = learned.get(scope)
        if after != before:
            if after is None:
                log.info("Discord: %s paces by its configured limit again", scope)
            else:
                log.info(
                    "Discord reports %d calls per window for bucket %s of %s (configured: "
                    "%s): every replica now paces it at %g calls per %gs",
                    reported,
                    bucket,
                    scope,
                    configured,
                    after.count,
                    after.per,
                )


def limit_from_headers(reported: int, reset_after: float, configured: RateLimit | None) -> Limit:
    """The limit a scope paces by when one of its buckets reports ``reported``
    calls per window: one call under it, over a window of ``reset_after`` seconds
    or the configured limit's, whichever is longer (a header seen mid-window
    says less than the whole window)."""
    per = max(reset_after, configured.per if configured is not None else 0.0)
    per = math.ceil(per * 1000) / 1000 or 1.0
    if reported >= 2:
        return Limit(reported - 1, per)
    return Limit(1, per * 1.5)


def _count(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
