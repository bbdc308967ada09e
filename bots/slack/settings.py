"""Slack settings. Their presence (``SLACK_BOT_TOKEN``) is what makes
``chatrelay run`` start the Slack adapter."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bots.slack.limits import STATUS_PER_MINUTE, TIER_WINDOW
from bots.slack.limits import default_limits as slack_limits
from core.config import ConfigError, read_settings
from core.reply import RateLimit


class SlackSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    slack_bot_token: SecretStr | None = None
    """``xoxb-…``; without it the Slack adapter does not start."""
    slack_app_token: SecretStr | None = None
    """``xapp-…``: Socket Mode. Without it, HTTP mode on ``PORT``."""
    slack_signing_secret: SecretStr | None = None
    """Verifies requests in HTTP mode (required there)."""
    slack_api_url: str = "https://slack.com/api/"
    """Web API base in slack_sdk's form, trailing slash (GovSlack, tests)."""
    slack_native_streaming: Literal["auto", "off"] = "auto"
    """``auto``: use chat.startStream where the workspace has it; ``off``: post and edit."""
    slack_allow_bots: bool = False
    """Answer messages from other bots (never our own)."""
    slack_edit_interval: float = Field(1.0, ge=0.2)
    """Seconds between two updates of one reply (the workspace budget may slow it more)."""
    slack_stream_rollover: float = Field(270.0, gt=0)
    """Seconds after which a native stream continues in a new message: Slack closes
    streams about five minutes after they start."""
    rate_tier_window: float = Field(TIER_WINDOW, ge=1)
    """Seconds of the window Slack's default limits count its per-minute tiers in."""
    slack_status_per_minute: int = Field(STATUS_PER_MINUTE, ge=1)
    """``assistant.threads.setStatus`` calls per minute per workspace ("special")."""

    @field_validator("slack_bot_token", "slack_app_token", "slack_signing_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``SLACK_APP_TOKEN=`` (empty) means "not set", e.g. to force HTTP mode."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def configured(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def default_limits(self) -> dict[str, RateLimit]:
        """Slack's default rate limits with these settings (``bots.slack.limits``)."""
        return slack_limits(self.rate_tier_window, self.slack_status_per_minute)


def load_slack_settings(**overrides: Any) -> SlackSettings:
    settings = read_settings(SlackSettings, **overrides)
    if settings.configured and not settings.socket_mode and settings.slack_signing_secret is None:
        raise ConfigError(
            "invalid setting SLACK_SIGNING_SECRET: required in HTTP mode (no SLACK_APP_TOKEN)"
        )
    if not settings.slack_api_url.endswith("/"):
        settings.slack_api_url += "/"
    return settings
