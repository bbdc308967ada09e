"""Per-channel rules: where the bot answers every message, with which prompt and
model, and who counts as a human agent it steps back for.

One TOML file serves every platform (``CHANNELS_FILE``, default
``channels.toml``), read through pydantic-settings so a mistake in it stops the
service at start with one line, like any other setting::

    [defaults]
    mode = "mention"            # answer only when mentioned (DMs always)

    [[channels]]
    platform = "slack"
    id = "C0123SUPPORT"
    mode = "auto"               # every top-level message gets a threaded reply
    system_prompt = "You are ACME's support assistant."
    model = "gpt-4o-mini"
    agents = ["U0AGENT1"]       # a reply from one of these hands the thread over
    agent_groups = ["S0AGENTS"] # Slack user groups / Discord role ids
    handoff_quiet_minutes = 120 # the bot speaks again after this (0: only when told)
    thread_per_message = true   # Discord: one thread per customer message
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.config import ConfigError

log = logging.getLogger(__name__)

Mode = Literal["mention", "auto"]

RESUME_COMMAND = "resume"
"""Said to the bot (a mention plus this word) by an agent in a handed-over
thread, it makes the bot answer there again."""


class ChannelRule(BaseModel):
    # A misspelt key (``modle = …``) is an error, not a rule silently ignored.
    model_config = ConfigDict(extra="forbid")

    platform: Literal["slack", "discord"]
    id: str
    mode: Mode | None = None
    system_prompt: str | None = None
    model: str | None = None
    agents: list[str] = Field(default_factory=list)
    agent_groups: list[str] = Field(default_factory=list)
    handoff_quiet_minutes: float | None = Field(None, ge=0)
    thread_per_message: bool | None = None


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Mode = "mention"
    handoff_quiet_minutes: float = Field(120.0, ge=0)
    thread_per_message: bool = False


class ChannelPolicy(BaseModel):
    """The rule in force for one channel, defaults filled in. Frozen: channels
    without a rule of their own share one (``default_policy``)."""

    model_config = ConfigDict(frozen=True)

    mode: Mode
    system_prompt: str | None
    model: str | None
    agents: frozenset[str]
    agent_groups: frozenset[str]
    handoff_quiet_minutes: float
    thread_per_message: bool

    def is_agent(self, user_id: str, groups: frozenset[str] | set[str] = frozenset()) -> bool:
        """Whether this person is a human agent here (by id, or by group/role)."""
        return user_id in self.agents or bool(self.agent_groups & set(groups))


class RulesSource(Protocol):
    """What adapters ask: ``ChannelRules`` (fixed) or ``LiveRules`` (reloaded)."""

    def policy(self, platform: str, channel_id: str) -> ChannelPolicy: ...

    def auto_channels(self, platform: str) -> list[str]: ...


class ChannelRules(BaseSettings):
    """The whole rules file."""

    model_config = SettingsConfigDict(extra="forbid")

    defaults: Defaults = Field(default_factory=Defaults)
    channels: list[ChannelRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_rule_per_channel(self) -> ChannelRules:
        """Two rules for one channel: only the first would ever apply, so the
        second is a mistake someone expects to work."""
        seen: set[tuple[str, str]] = set()
        for rule in self.channels:
            key = (rule.platform, rule.id)
            if key in seen:
                raise ValueError(f"channel {rule.platform} {rule.id} has two rules")
            seen.add(key)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Rules come from the file only: an environment variable that happens to
        be called ``CHANNELS`` must not leak in."""
        return (init_settings,)

    def policy(self, platform: str, channel_id: str) -> ChannelPolicy:
        rule = next(
            (r for r in self.channels if r.platform == platform and r.id == channel_id), None
        )
        d = self.defaults
        if rule is None:
            return default_policy(d.mode, d.handoff_quiet_minutes, d.thread_per_message)
        return ChannelPolicy(
            mode=rule.mode or d.mode,
            system_prompt=rule.system_prompt,
            model=rule.model,
            agents=frozenset(rule.agents),
            agent_groups=frozenset(rule.agent_groups),
            handoff_quiet_minutes=(
                rule.handoff_quiet_minutes
                if rule.handoff_quiet_minutes is not None
                else d.handoff_quiet_minutes
            ),
            thread_per_message=(
                rule.thread_per_message
                if rule.thread_per_message is not None
                else d.thread_per_message
            ),
        )

    def auto_channels(self, platform: str) -> list[str]:
        return [
            r.id
            for r in self.channels
            if r.platform == platform and self.policy(platform, r.id).mode == "auto"
        ]


@functools.lru_cache(maxsize=16)
def default_policy(
    mode: Mode, handoff_quiet_minutes: float, thread_per_message: bool
) -> ChannelPolicy:
    """The policy of a channel without a rule: one per set of defaults, not one
    per event (every reply holds its policy while it streams, 1.5 KB each)."""
    return ChannelPolicy(
        mode=mode,
        system_prompt=None,
        model=None,
        agents=frozenset(),
        agent_groups=frozenset(),
        handoff_quiet_minutes=handoff_quiet_minutes,
        thread_per_message=thread_per_message,
    )


def load_rules(path: str | Path | None) -> ChannelRules:
    """Read the rules file; a missing file means defaults only, a bad one a ``ConfigError``."""
    if path is None or not Path(path).exists():
        return ChannelRules()
    toml_path = Path(path)
    try:
        values = TomlConfigSettingsSource(ChannelRules, toml_file=toml_path)()
        return ChannelRules(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error.get("loc", ()))
        raise ConfigError(f"invalid channels file {toml_path}: {where}: {error['msg']}") from None
    except ValueError as exc:  # TOML syntax
        raise ConfigError(f"invalid channels file {toml_path}: {exc}") from None


class LiveRules:
    """The rules file, reloaded when it changes, without a restart.

    Adapters ask it for a channel's policy on every event, so an edit to the
    file takes effect on the next message. A file that becomes invalid is
    logged and ignored: the last good rules stay in force.
    """

    def __init__(self, path: str | Path, *, interval: float = 2.0) -> None:
        self.path = Path(path)
        self.interval = interval
        self.current = load_rules(self.path)
        self._stamp = self._mtime()

    def policy(self, platform: str, channel_id: str) -> ChannelPolicy:
        return self.current.policy(platform, channel_id)

    def auto_channels(self, platform: str) -> list[str]:
        return self.current.auto_channels(platform)

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def reload_if_changed(self) -> bool:
        """Reload if the file changed since last time; True if new rules apply."""
        stamp = self._mtime()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.current = load_rules(self.path)
        except ConfigError as exc:
            log.error("keeping the previous channel rules: %s", exc)
            return False
        log.info("channel rules reloaded from %s", self.path)
        return True

    async def watch(self) -> None:
        """Poll the file until cancelled (a poll is one ``stat``: cheap, portable)."""
        while True:
            await asyncio.sleep(self.interval)
            self.reload_if_changed()
