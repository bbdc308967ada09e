"""Rate-limit buckets: which window counts a call (per channel for message sends and
edits together, per interaction token for webhooks, per route otherwise, plus the
global limit), and the 429 with Discord's headers when it is full."""

from __future__ import annotations

import math
import time

from tests.fakes.discord_server.constants import Json
from tests.fakes.discord_server.limits import Limit, Window, bucket_hash
from tests.fakes.discord_server.records import CallRecord
from tests.fakes.discord_server.routing import Route
from tests.fakes.discord_server.state import DiscordState


class RateLimiting(DiscordState):
    """Counts REST calls in Discord's buckets."""

    def _rate_limit(
        self, route: Route, params: dict[str, str], call: CallRecord
    ) -> tuple[Json | None, dict[str, str]]:
        """Counts the call; returns (429 body or None, headers)."""
        if not self.limits.enabled:
            return None, {}
        now = call.time
        if route.auth and route.kind != "callback":
            if (
                self._global_window is None
                or self._global_window.limit != self.limits.global_per_second
            ):
                self._global_window = Window(self.limits.global_per_second, 1.0)
            allowed, _, reset_after = self._global_window.hit(now)
            if not allowed:
                self.rate_limited["global"] += 1
                call.bucket = "global"
                retry = math.ceil(reset_after * 1000) / 1000
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": retry,
                    "global": True,
                }
                return body, {
                    "Retry-After": str(max(1, math.ceil(retry))),
                    "X-RateLimit-Global": "true",
                    "X-RateLimit-Scope": "global",
                }
        key, limit, hash_name = self._bucket_for(route, params)
        call.bucket = key
        window = self._windows.get(key)
        if window is None or (window.limit, window.per) != (limit.limit, limit.per):
            window = self._windows[key] = Window(limit.limit, limit.per)
        allowed, remaining, reset_after = window.hit(now)
        reset_after = max(reset_after, 0.001)
        headers = {
            "X-RateLimit-Limit": str(limit.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket_hash(hash_name),
        }
        if allowed:
            return None, headers
        self.rate_limited[key] += 1
        retry = math.ceil(reset_after * 1000) / 1000
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        headers["X-RateLimit-Scope"] = limit.scope
        body = {"message": "You are being rate limited.", "retry_after": retry, "global": False}
        return body, headers

    def _bucket_for(self, route: Route, params: dict[str, str]) -> tuple[str, Limit, str]:
        """(counting key, limit, name hashed into X-RateLimit-Bucket)."""
        if route.kind in ("message_create", "message_edit"):
            name = "channel_messages" if self.limits.shared_message_bucket_hash else route.kind
            return f"channel_messages:{params['channel_id']}", self.limits.channel_messages, name
        if route.kind == "webhook":
            rec = self.interactions.get(params["webhook_token"])
            key = f"interaction:{rec.id}" if rec else f"webhook:{params['webhook_token']}"
            return key, self.limits.interaction_webhook, "interaction_webhook"
        major = next(
            (params[p] for p in ("channel_id", "guild_id", "interaction_id") if p in params), ""
        )
        name = f"{route.method} {route.template}"
        return f"{name}:{major}", self.limits.route_default, name

    def reset_rate_limits(self) -> None:
        self._windows.clear()
        self._global_window = None
