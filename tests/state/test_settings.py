"""State settings: defaults, overrides, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.budget import Limit
from core.config import ConfigError
from core.state.settings import DEFAULT_LIMITS, load_state_settings, parse_limit

STATE_VARS = [
    "REDIS_URL",
    "REDIS_PREFIX",
    "STATE_DIR",
    "CONVERSATION_TTL",
    "CONTEXT_TOKENS",
    "INFLIGHT_HEARTBEAT",
    "INFLIGHT_TIMEOUT",
    "RATE_LIMITS",
    "QUOTA_USER_DAILY_TOKENS",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in STATE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_mean_embedded_redis_and_documented_limits() -> None:
    settings = load_state_settings()
    assert settings.redis_url is None
    assert settings.redis_prefix == "chatrelay:"
    assert settings.state_dir == Path(".chatrelay")
    assert settings.conversation_ttl == 7 * 86400
    table = settings.limit_table()
    assert table.lookup("slack:T1:chat.update") == DEFAULT_LIMITS["slack:*:chat.update"]
    assert table.lookup("discord:channel:42") == Limit(4, 5)


def test_every_default_limit_is_window_safe() -> None:
    # GCRA admits burst - 1 + count calls per window: the platform's N must hold,
    # with one call to spare (see DEFAULT_LIMITS).
    platform = {
        "slack:*:chat.update": (50, 60),
        "slack:*:chat.postMessage:*": (3, 3),
        "slack:*:chat.startStream": (20, 60),
        "slack:*:chat.appendStream": (100, 60),
        "slack:*:chat.stopStream": (20, 60),
        "slack:*:assistant.threads.*": (20, 60),
        "discord:channel:*": (5, 5),
        "discord:interaction:*": (5, 2),
        "discord:global": (50, 1),
    }
    assert set(platform) == set(DEFAULT_LIMITS)
    for pattern, (count, window) in platform.items():
        limit = DEFAULT_LIMITS[pattern]
        admitted = limit.burst - 1 + window / limit.interval
        assert admitted + 1 <= count, pattern


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://user:pw@redis.example:6380/2")
    monkeypatch.setenv("REDIS_PREFIX", "bot2:")
    monkeypatch.setenv("RATE_LIMITS", '{"slack:*:chat.update": "30/60", "x:*": "2/1/4"}')
    settings = load_state_settings()
    assert settings.redis_url == "rediss://user:pw@redis.example:6380/2"
    assert settings.redis_prefix == "bot2:"
    table = settings.limit_table()
    assert table.lookup("slack:T9:chat.update") == Limit(30, 60)
    assert table.lookup("x:y") == Limit(2, 1, burst=4)
    assert table.lookup("discord:global") == DEFAULT_LIMITS["discord:global"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REDIS_URL", "http://localhost:6379", "invalid setting REDIS_URL: "),
        ("CONVERSATION_TTL", "-5", "invalid setting CONVERSATION_TTL: "),
        ("RATE_LIMITS", '{"a:*": "fast"}', "RATE_LIMITS: Value error, a:*: 'fast' is not COUNT"),
        ("RATE_LIMITS", "{not json", "invalid setting RATE_LIMITS: not valid JSON"),
        ("INFLIGHT_TIMEOUT", "6", "invalid settings: INFLIGHT_TIMEOUT must be at least twice"),
    ],
)
def test_bad_values_give_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_state_settings()
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_limit_specs() -> None:
    assert parse_limit("50/60") == Limit(50, 60)
    assert parse_limit(" 5 / 5 / 5 ") == Limit(5, 5, burst=5)
    assert parse_limit("0.5/1") == Limit(0.5, 1)
    with pytest.raises(ValueError, match="COUNT/SECONDS"):
        parse_limit("5 per second")
    with pytest.raises(ValueError, match="invalid limit"):
        parse_limit("0/1")
