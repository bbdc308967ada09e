"""Settings for shared state, read once at start like ``core.config``'s.

They live apart from ``core.config.Settings`` so a process that never touches
Redis (``chatrelay ask``) neither reads nor validates them. A bad value stops
the service with the same one line naming the variable (``ConfigError``).

Rate limits: each adapter declares its platform's defaults next to the code
that names its scopes (``bots/slack/limits.py``, ``bots/discord/limits.py``);
the composition (``bots.cli``) merges them and passes them to ``open_state``.
``RATE_LIMITS`` overrides them per scope pattern, because Discord says not to
hard-code its limits and Slack's tiers are "N+ per minute". Core knows only
the machinery: ``parse_limit`` and ``StateSettings.limit_table``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.config import read_settings
from core.reply.budget import Limit, LimitTable, RateLimit, Window
from core.state.topology import Topology

_LIMIT_SPEC = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+|window)\s*)?$")


def parse_limit(spec: str) -> RateLimit:
    """``"50/60"`` (GCRA: 50 calls per 60 s, evenly spaced), ``"5/5/5"`` (with a
    burst of 5) or ``"19/61/window"`` (at most 19 calls in any 61 s)."""
    match = _LIMIT_SPEC.match(spec)
    if match is None:
        raise ValueError(
            f"{spec!r} is not COUNT/SECONDS, COUNT/SECONDS/BURST or COUNT/SECONDS/window"
        )
    count, per, burst = match.groups()
    if burst == "window":
        if not count.isdigit():
            raise ValueError(f"{spec!r}: a window's COUNT is a whole number of calls")
        return Window(int(count), float(per))
    return Limit(float(count), float(per), int(burst) if burst else 1)


class StateSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    redis_url: str | None = None
    """``redis://``, ``rediss://`` (TLS) or ``unix://``; unset: an embedded redis-server
    (unless ``REDIS_SENTINELS`` is set)."""
    redis_cluster: bool = False
    """``REDIS_URL`` names one node of a Redis Cluster; the others are learnt from it."""
    redis_sentinels: str = ""
    """``host:port,host2:port``: ask these sentinels where the master is. redis-py
    reads no sentinel URL; ``REDIS_URL``, if also set, gives only the master's
    credentials, database and TLS."""
    redis_sentinel_service: str = Field("mymaster", min_length=1)
    """The master's name in the sentinels' configuration."""
    redis_sentinel_password: SecretStr | None = None
    """For sentinels that require a password of their own."""
    redis_wait_replicas: int | None = Field(None, ge=0)
    """Replicas a dedupe claim or lock grab waits for (``WAIT``) before it counts,
    so a failover can't forget it; unset: 1 on a cluster or with Sentinel, 0 on
    one server."""
    redis_wait_timeout: float = Field(0.1, gt=0, le=1.0)
    """Seconds such a write waits for its replicas before going on without them."""
    redis_max_connections: int = Field(500, ge=10)
    """Connections this process may open to Redis; at the limit a command waits
    for one (``core.state.connection.MAX_CONNECTIONS``)."""
    redis_prefix: str = Field("chatrelay:", min_length=1)
    """Prepended to every key and channel, so several bots can share one Redis."""
    state_dir: Path = Path(".chatrelay")
    """Where the embedded redis-server keeps its socket, data and log."""
    conversation_ttl: int = Field(7 * 86400, gt=0)
    """Seconds a conversation is kept after its last use."""
    conversation_max_turns: int = Field(200, ge=2)
    """Turns kept per conversation; older ones are trimmed on append."""
    context_tokens: int = Field(8000, ge=64)
    """Estimated tokens of history (system prompt included) sent to the model."""
    turn_max_chars: int = Field(16_000, ge=100)
    """Longer messages are stored truncated, with a marker saying so."""
    dedupe_ttl: int = Field(86_400, gt=0)
    """Seconds an event id is remembered (Slack retries for about 5 minutes)."""
    lock_ttl: float = Field(30.0, gt=0)
    """Seconds a conversation lock outlives its holder's last extension."""
    lock_wait: float = Field(300.0, ge=0)
    """Seconds a newer message waits for the reply ahead of it."""
    inflight_heartbeat: float = Field(5.0, gt=0)
    inflight_timeout: float = Field(30.0, gt=0)
    """Seconds without a heartbeat after which a streaming reply counts as orphaned."""
    inflight_final_retry_for: float = Field(3600.0, gt=0)
    """Seconds a final state the platform keeps refusing is retried (by any
    replica, with backoff) before it is dropped with an error log."""
    quota_user_daily_tokens: int = Field(0, ge=0)
    """Tokens one user may spend per UTC day; 0: no quota."""
    quota_channel_daily_tokens: int = Field(0, ge=0)
    """Tokens one channel may spend per UTC day; 0: no quota."""
    rate_limits: dict[str, str] = Field(default_factory=dict)
    """JSON object, scope pattern -> ``COUNT/SECONDS[/BURST]`` (GCRA) or
    ``COUNT/SECONDS/window`` (sliding window), tried before the defaults."""

    @field_validator("redis_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value.strip()

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str) -> str:
        parse_addresses(value)
        return value.strip()

    @field_validator("rate_limits")
    @classmethod
    def _limits(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern, spec in value.items():
            try:
                parse_limit(spec)
            except ValueError as exc:
                raise ValueError(f"{pattern}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> StateSettings:
        if self.redis_cluster and self.redis_sentinels:
            raise ValueError("REDIS_CLUSTER and REDIS_SENTINELS exclude each other: pick one")
        if self.redis_cluster and self.redis_url is None:
            raise ValueError("REDIS_CLUSTER needs REDIS_URL naming one of the cluster's nodes")
        if self.redis_cluster and urlsplit(self.redis_url or "").scheme == "unix":
            raise ValueError("REDIS_CLUSTER needs a redis:// or rediss:// REDIS_URL")
        if self.redis_cluster and urlsplit(self.redis_url or "").path.strip("/") not in ("", "0"):
            raise ValueError("REDIS_CLUSTER: a cluster has only database 0; end REDIS_URL in /0")
        return self

    @property
    def topology(self) -> Topology:
        """Where Redis is, as ``core.state.connection.open_redis`` wants it."""
        password = self.redis_sentinel_password
        return Topology(
            url=self.redis_url,
            cluster=self.redis_cluster,
            sentinels=parse_addresses(self.redis_sentinels),
            service=self.redis_sentinel_service,
            sentinel_password=password.get_secret_value() if password else None,
        )

    @property
    def wait_replicas(self) -> int:
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.redis_cluster or self.redis_sentinels else 0

    @model_validator(mode="after")
    def _heartbeat_below_timeout(self) -> StateSettings:
        if self.inflight_heartbeat * 2 > self.inflight_timeout:
            raise ValueError(
                "INFLIGHT_TIMEOUT must be at least twice INFLIGHT_HEARTBEAT, or a live "
                "reply whose heartbeat is a little late would be finalised"
            )
        return self

    def limit_table(self, defaults: Mapping[str, RateLimit] | None = None) -> LimitTable:
        """``RATE_LIMITS`` first, then ``defaults`` (the adapters' default limits,
        scope pattern -> limit); a scope neither matches is unlimited."""
        rules = {pattern: parse_limit(spec) for pattern, spec in self.rate_limits.items()}
        for pattern, limit in (defaults or {}).items():
            rules.setdefault(pattern, limit)
        return LimitTable(rules)


def parse_addresses(spec: str) -> tuple[tuple[str, int], ...]:
    """``"host:26379,host2:26379"`` as (host, port) pairs; ``""``: none."""
    addresses = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not HOST:PORT")
        addresses.append((host.strip("[]"), int(port)))
    return tuple(addresses)


def load_state_settings(**overrides: Any) -> StateSettings:
    """Read and check the state settings; raise ``ConfigError`` naming the first bad one."""
    return read_settings(StateSettings, **overrides)
