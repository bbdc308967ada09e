"""Every Slack Web API call chatrelay makes, through one door.

- **Nothing pings.** ``SafeWebClient`` neutralises every text field of every
  call (``text``, ``markdown_text``, block texts, titles, prompts), whichever
  listener or sink makes it, so model output can't notify a channel or a user
  from a field someone forgot: one choke point instead of one call per site.
- **Errors become what the engine understands** (``translate``): a 429 is
  ``RateLimited`` on the method's budget scope, a vanished message
  ``MessageGone``; a workspace without streaming, a closed stream and Slack's
  own Stop are told apart for the sink, which switches route (``Reroute``) or
  stops (``UserStopped``).
- **Every call costs its method's budget** (``spend``, with the scopes
  ``bots.slack.limits`` names): a listener spends before it calls; a sink only
  names its calls' scopes and the engine spends them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bots.slack.format import neutralise
from bots.slack.limits import scope, scopes
from core.reply import Budget, MessageGone, RateLimited, acquire_all

TEXT_FIELDS = frozenset({"text", "markdown_text", "title", "message", "alt_text", "status"})
"""Fields whose string values reach people's eyes (and Slack's mention parser)."""

UNSUPPORTED = frozenset(
    {
        "feature_not_enabled",
        "unknown_method",
        "not_allowed",
        "method_not_supported_for_channel_type",
    }
)
"""Errors meaning this workspace (or channel) can't use native streaming."""

GONE = frozenset(
    {"message_not_found", "channel_not_found", "thread_not_found", "is_archived", "not_in_channel"}
)
"""Errors meaning the message can never be written again."""

STREAM_CLOSED = frozenset({"message_not_in_streaming_state"})
STOPPED_BY_USER = "stopped_by_user"

COUNTED_ERRORS = (
    UNSUPPORTED
    | GONE
    | STREAM_CLOSED
    | {
        STOPPED_BY_USER,
        "ratelimited",
        "rate_limited",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "team_access_not_granted",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_arguments",
        "invalid_arg_name",
        "invalid_ts",
        "cant_update_message",
        "edit_window_closed",
        "message_limit_exceeded",
        "streaming_state_conflict",
        "user_not_found",
        "internal_error",
        "fatal_error",
        "request_timeout",
        "service_unavailable",
        "team_added_to_org",
    }
)
"""Slack error codes counted by name in ``chatrelay_platform_api_errors_total``;
any other counts as ``other`` (a metric label must take few values)."""


def neutralised(value: Any, key: str = "") -> Any:
    """``value`` with every string under a text field neutralised, recursively."""
    if isinstance(value, str):
        return neutralise(value) if key in TEXT_FIELDS else value
    if isinstance(value, dict):
        return {k: neutralised(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [neutralised(v, key) for v in value]
    return value


class SafeWebClient(AsyncWebClient):
    """slack_sdk's client with every outgoing text neutralised (see the module doc)."""

    on_error: Callable[[str, str], None] | None = None
    """Told of every failed call: the method and ``error_label`` (metrics)."""

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        try:
            return await super().api_call(
                api_method,
                http_verb=http_verb,
                files=files,
                data=neutralised(data) if isinstance(data, dict) else data,
                params=neutralised(params) if params else params,
                json=neutralised(json) if json else json,
                headers=headers,
                auth=auth,
            )
        except SlackApiError as exc:
            if self.on_error is not None:
                self.on_error(api_method, error_label(exc))
            raise
        except (aiohttp.ClientError, TimeoutError):
            if self.on_error is not None:
                self.on_error(api_method, "unreachable")
            raise


def error_of(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "")) if exc.response is not None else ""


def error_label(exc: SlackApiError) -> str:
    """The error for a metric label: a code of ``COUNTED_ERRORS``, ``other`` for
    any other code, ``http_<status>`` for an answer without one."""
    error = error_of(exc)
    if error:
        return error if error in COUNTED_ERRORS else "other"
    status = exc.response.status_code if exc.response is not None else None
    return f"http_{status}" if isinstance(status, int) and 100 <= status < 600 else "other"


def rate_limited(exc: SlackApiError, scope_name: str) -> RateLimited | None:
    """A 429 as the engine's ``RateLimited`` on ``scope_name``, else None."""
    response = exc.response
    if response is None or response.status_code != 429:
        return None
    headers = response.headers or {}
    raw = headers.get("Retry-After", headers.get("retry-after", 1))
    try:
        retry_after = float(raw)
    except (TypeError, ValueError):
        retry_after = 1.0
    return RateLimited(retry_after, scope_name)


def gone(method: str, exc: SlackApiError) -> MessageGone | None:
    error = error_of(exc)
    return MessageGone(f"{method}: {error}") if error in GONE else None


async def spend(budget: Budget, team: str, method: str, channel: str = "") -> None:
    """Wait for a slot of every budget a call of ``method`` spends: a listener's
    call goes out only then, like every other Slack call."""
    await acquire_all(budget, scopes(team, method, channel))


class Unsupported(Exception):
    """The workspace (or channel) has no native streaming: post and edit instead."""


class StreamClosed(Exception):
    """The stream takes no more (Slack closed it, or it passed its undocumented
    size cap): its message is recovered with ``chat.update``."""


class StoppedByUser(Exception):
    """The user pressed Slack's own Stop on a streamed message."""


def translate(method: str, exc: SlackApiError, scope_name: str) -> Exception:
    """What a failed call of ``method`` means to a reply: ``RateLimited`` on
    ``scope_name``, ``MessageGone``, one of the stream's endings above, else
    ``exc`` itself."""
    limited = rate_limited(exc, scope_name)
    if limited is not None:
        return limited
    error = error_of(exc)
    if error in UNSUPPORTED and method.startswith("chat.") and "Stream" in method:
        return Unsupported(error)
    if error in STREAM_CLOSED or (error == "msg_too_long" and "Stream" in method):
        return StreamClosed(error)
    if error == STOPPED_BY_USER:
        return StoppedByUser(error)
    return gone(method, exc) or exc


async def call(
    client: AsyncWebClient, team: str, method: str, channel: str, params: dict[str, Any]
) -> Any:
    """Call ``method``, its failure ``translate``d (on the scope of ``team`` and
    ``channel``)."""
    try:
        return await client.api_call(method, json=params)
    except SlackApiError as exc:
        raise translate(method, exc, scope(team, method, channel)) from exc
