"""State settings: defaults, overrides, and one clear line for a bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import ConfigError
from core.reply.budget import Limit, Window
from core.state.settings import load_state_settings, parse_limit

DEFAULTS = {"y:*:call": Window(3, 10)}
"""An adapter's default limits, as the composition passes them (``bots.cli``)."""

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


def test_defaults_mean_embedded_redis_and_no_limits_of_their_own() -> None:
    settings = load_state_settings()
    assert settings.redis_url is None
    assert settings.redis_prefix == "chatrelay:"
    assert settings.state_dir == Path(".chatrelay")
    assert settings.conversation_ttl == 7 * 86400
    # The platforms' limits are the adapters' (tests/test_cli_limits.py): core has none.
    assert settings.limit_table().lookup("slack:T1:chat.update") is None
    table = settings.limit_table(DEFAULTS)
    assert table.lookup("y:T1:call") == DEFAULTS["y:*:call"]
    assert table.lookup("y:T1:other") is None


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://user:pw@redis.example:6380/2")
    monkeypatch.setenv("REDIS_PREFIX", "bot2:")
    limits = {
        "slack:*:chat.update": "30/60",
        "x:*": "2/1/4",
        "slack:*:chat.startStream": "20/60/window",
    }
    monkeypatch.setenv("RATE_LIMITS", json.dumps(limits))
    settings = load_state_settings()
    assert settings.redis_url == "rediss://user:pw@redis.example:6380/2"
    assert settings.redis_prefix == "bot2:"
    defaults = {"slack:*:chat.update": Limit(45, 60), **DEFAULTS}
    table = settings.limit_table(defaults)
    assert table.lookup("slack:T9:chat.update") == Limit(30, 60)  # before the defaults
    assert table.lookup("x:y") == Limit(2, 1, burst=4)
    assert table.lookup("slack:T9:chat.startStream") == Window(20, 60)
    assert table.lookup("y:T9:call") == DEFAULTS["y:*:call"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REDIS_URL", "http://localhost:6379", "invalid setting REDIS_URL: "),
        ("CONVERSATION_TTL", "-5", "invalid setting CONVERSATION_TTL: "),
        ("RATE_LIMITS", '{"a:*": "fast"}', "RATE_LIMITS: Value error, a:*: 'fast' is not COUNT"),
        ("RATE_LIMITS", "{not json", "invalid setting RATE_LIMITS: not valid JSON"),
        ("INFLIGHT_TIMEOUT", "6", "invalid settings: INFLIGHT_TIMEOUT must be at least twice"),
        ("RATE_LIMITS", '{"a:*": "2.5/60/window"}', "a:*: '2.5/60/window': a window's COUNT"),
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
    assert parse_limit("19/61/window") == Window(19, 61)
    assert parse_limit(" 5 / 2.5 / window ") == Window(5, 2.5)
    with pytest.raises(ValueError, match="COUNT/SECONDS"):
        parse_limit("5 per second")
    with pytest.raises(ValueError, match="invalid limit"):
        parse_limit("0/1")
    with pytest.raises(ValueError, match="invalid window"):
        parse_limit("0/60/window")
    with pytest.raises(ValueError, match="COUNT/SECONDS/window"):
        parse_limit("5/60/windowed")
