"""Slack's part of ``chatrelay check``: does Slack take the token, and did the
install grant every scope chatrelay calls with?"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from bots.check import Finding
from bots.slack.api import SafeWebClient

if TYPE_CHECKING:
    from bots.slack.settings import SlackSettings

REQUIRED_SCOPES = frozenset(
    {
        "app_mentions:read",
        "assistant:write",
        "chat:write",
        "channels:history",
        "groups:history",
        "im:history",
        "usergroups:read",
        "users:read",
    }
)
"""The bot scopes of ``deploy/slack-manifest.yml`` (``tests/test_check.py`` keeps
them equal): an install made before a scope was added lacks it until it is
reinstalled, and the calls that need it fail one by one at run time."""


async def check_slack(settings: SlackSettings) -> Finding:
    if not settings.configured or settings.slack_bot_token is None:
        return Finding("slack", "skip", "SLACK_BOT_TOKEN not set")
    client = SafeWebClient(
        token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url
    )
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "error") if exc.response is not None else "error"
        return Finding("slack", "FAIL", f"Slack refused SLACK_BOT_TOKEN ({error})")
    granted = _scopes(auth.headers.get("x-oauth-scopes") or auth.headers.get("X-OAuth-Scopes"))
    where = f"team {auth.get('team')} ({auth.get('team_id')}) as @{auth.get('user')}"
    mode = "Socket Mode" if settings.socket_mode else "HTTP mode"
    if granted is None:
        return Finding("slack", "ok", f"{where}, {mode}; Slack did not say which scopes")
    missing = sorted(REQUIRED_SCOPES - granted)
    if missing:
        return Finding(
            "slack",
            "FAIL",
            f"{where}: the install lacks {', '.join(missing)} (reinstall the app from "
            "deploy/slack-manifest.yml)",
        )
    return Finding("slack", "ok", f"{where}, {mode}, every scope granted")


def _scopes(header: str | None) -> frozenset[str] | None:
    if header is None:
        return None
    return frozenset(s.strip() for s in header.split(",") if s.strip())
