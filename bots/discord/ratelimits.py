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
``X-RateLimit-Remaining: 0`` until ``X-RateLimit-Reset-After``. Limits
themselves are not rewritten from ``X-RateLimit-Limit``: the header describes
one route's bucket, not the send-and-edit limit that actually binds.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from types import SimpleNamespace

import aiohttp

from core.budget import Budget

log = logging.getLogger(__name__)

GLOBAL_SCOPE = "discord:global"
"""50 requests per second per bot token (interaction webhooks are exempt)."""

_CHANNEL_MESSAGE = re.compile(r"/channels/(\d+)/messages(?:/\d+)?/?$")
_WEBHOOK = re.compile(r"/webhooks/\d+/([^/]+)(?:/messages/[^/]+)?/?$")
_TOKEN_IN_PATH = re.compile(r"/(webhooks|interactions)/\d+/[^/]+")
_ID = re.compile(r"/\d+(?=/|$)")


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

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self.rate_limited = 0
        """429s seen (discord.py retried them, or raised them to the sink)."""
        self.exhausted = 0
        """Answers saying a paced bucket has no call left in its window."""

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
        """Block the call's scope as long as Discord's answer says to."""
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
                headers.get("X-RateLimit-Scope", "unknown"),
                scope or "no paced scope",
                wait,
            )
            if scope is not None:
                await self._budget.block(scope, wait)
            return
        if scope is not None and headers.get("X-RateLimit-Remaining") == "0":
            self.exhausted += 1
            await self._budget.block(scope, _seconds(headers.get("X-RateLimit-Reset-After")))


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
