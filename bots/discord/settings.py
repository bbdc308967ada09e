"""Discord settings. Their presence (``DISCORD_BOT_TOKEN``) is what makes
``chatrelay run`` start the Discord adapter.

Id lists (guilds, users, roles, channels) are written as ``1,2,3`` or as a JSON
array: operators paste ids from Discord's "Copy ID", and commas are what they
reach for first.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.config import read_settings

IdList = Annotated[list[int], NoDecode]

PLATFORM = "discord"
"""The ``platform`` of its replies, conversations, metrics and Redis keys."""

INTERACTION_TOKEN_LIFETIME = 900.0
"""Seconds Discord lets an interaction token edit its messages (15 minutes)."""


class DiscordSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    discord_bot_token: SecretStr | None = None
    """Without it the Discord adapter does not start."""
    discord_api_url: str = "https://discord.com/api/v10"
    """REST base in discord.py's ``Route.BASE`` form, version included (tests, nirn-proxy)."""
    discord_gateway_url: str = "wss://gateway.discord.gg"
    discord_shard_ids: IdList = Field(default_factory=list)
    """Shards this process runs (empty: all of ``DISCORD_SHARD_COUNT``). Exactly one
    process must run shard 0: it alone receives DMs, and it syncs the slash commands."""
    discord_shard_count: int | None = Field(None, ge=1)
    """Shards across every process; unset: the count Discord recommends."""
    discord_guild_ids: IdList = Field(default_factory=list)
    """Sync slash commands to these guilds (instant, for development) instead of globally."""
    discord_allowed_users: IdList = Field(default_factory=list)
    discord_allowed_roles: IdList = Field(default_factory=list)
    """With either allow list set, only those users, or members with one of those roles,
    get answers (in DMs roles are unknown, so only the allowed users)."""
    discord_blocked_users: IdList = Field(default_factory=list)
    discord_blocked_roles: IdList = Field(default_factory=list)
    discord_allowed_channels: IdList = Field(default_factory=list)
    """Channels (or their categories; a thread counts as its parent) the bot answers in;
    empty: all."""
    discord_blocked_channels: IdList = Field(default_factory=list)
    discord_dms: bool = True
    """Answer direct messages."""
    discord_allow_bots: bool = False
    """Answer messages from other bots (never our own)."""
    discord_models: list[str] = Field(default_factory=list)
    """Models offered by ``/model`` (registered only with two or more)."""
    discord_render: Literal["content", "embeds"] = "content"
    """``content``: plain messages of up to 2000 characters; ``embeds``: an embed
    description of up to 4096, with the reply's state in the footer."""
    discord_message_content: Literal["auto", "on", "off"] = "auto"
    """The privileged MESSAGE_CONTENT intent. ``auto``: only when an auto-reply channel
    is configured (mentions, DMs and replies that ping the bot are readable without it)."""
    discord_edit_interval: float = Field(1.0, ge=0.2)
    """Seconds between two updates of one reply (the channel budget may slow it more)."""
    discord_interaction_window: float = Field(840.0, gt=0, le=INTERACTION_TOKEN_LIFETIME)
    """Seconds after which an ``/ask`` reply still streaming continues in a channel
    message, before the 15-minute interaction token can no longer edit it."""
    discord_chain_depth: int = Field(20, ge=1, le=100)
    """Messages of a reply chain read back when its conversation is not in memory."""
    discord_invalid_slow: int = Field(1_000, ge=1, lt=10_000)
    """Invalid requests (401, 403, 429) in 10 minutes, across replicas, from which every
    Discord limit is halved (Discord bans the address at 10,000;
    ``bots.discord.limits.InvalidRequestGuard``)."""
    discord_invalid_pause: int = Field(5_000, ge=2, lt=10_000)
    """Invalid requests in 10 minutes from which ordinary updates pause too (first and
    final frames still go out)."""
    discord_learned_limit_ttl: float = Field(600.0, gt=0)
    """Seconds a limit learnt from Discord's headers lasts unless an answer confirms it."""
    discord_limits_refresh: float = Field(2.0, gt=0)
    """Seconds between two reads of what other replicas learnt and counted."""

    @field_validator(
        "discord_shard_ids",
        "discord_guild_ids",
        "discord_allowed_users",
        "discord_allowed_roles",
        "discord_blocked_users",
        "discord_blocked_roles",
        "discord_allowed_channels",
        "discord_blocked_channels",
        mode="before",
    )
    @classmethod
    def _ids(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError("not a valid JSON array of ids") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("discord_shard_ids", "discord_guild_ids", mode="after")
    @classmethod
    def _sorted(cls, value: list[int]) -> list[int]:
        return sorted(set(value))

    @field_validator("discord_bot_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """``DISCORD_BOT_TOKEN=`` (an empty line in a .env) means no Discord."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("discord_api_url")
    @classmethod
    def _api(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("discord_gateway_url")
    @classmethod
    def _gateway(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

    @model_validator(mode="after")
    def _shards(self) -> DiscordSettings:
        if self.discord_shard_ids and self.discord_shard_count is None:
            raise ValueError(
                "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the shards of all processes)"
            )
        count = self.discord_shard_count
        if count is not None and any(i < 0 or i >= count for i in self.discord_shard_ids):
            raise ValueError(f"DISCORD_SHARD_IDS must be between 0 and {count - 1}")
        return self

    @model_validator(mode="after")
    def _invalid_thresholds(self) -> DiscordSettings:
        if self.discord_invalid_slow >= self.discord_invalid_pause:
            raise ValueError("DISCORD_INVALID_SLOW must be below DISCORD_INVALID_PAUSE")
        return self

    @property
    def configured(self) -> bool:
        return self.discord_bot_token is not None

    @property
    def owns_shard_zero(self) -> bool:
        """Whether this process receives DMs and syncs the slash commands."""
        return not self.discord_shard_ids or 0 in self.discord_shard_ids


def load_discord_settings(**overrides: Any) -> DiscordSettings:
    """Read and check the Discord settings; raise ``ConfigError`` naming the first bad one."""
    return read_settings(DiscordSettings, **overrides)
