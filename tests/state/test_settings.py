"""State settings: defaults, overrides, and one clear line for a bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.budget import Limit, Window
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
    "RATE_TIER_WINDOW",
    "SLACK_STATUS_PER_MINUTE",
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
    # GCRA admits burst - 1 + count calls per window, a window its count (in a
    # window at least as long as the platform's): the platform's N must hold,
    # with one call to spare (see default_limits).
    platform = {
        "slack:*:chat.update": (50, 60),
        "slack:*:chat.postMessage:*": (3, 3),
        "slack:*:chat.startStream": (20, 60),
        "slack:*:chat.appendStream": (100, 60),
        "slack:*:chat.stopStream": (20, 60),
        "slack:*:assistant.threads.setStatus": (600, 60),
        "slack:*:assistant.threads.*": (20, 60),
        "discord:channel:*": (5, 5),
        "discord:interaction:*": (5, 2),
        "discord:global": (50, 1),
    }
    assert set(platform) == set(DEFAULT_LIMITS)
    for pattern, (count, window) in platform.items():
        limit = DEFAULT_LIMITS[pattern]
        if isinstance(limit, Window):
            assert limit.per >= window + 1, pattern  # a second for calls in flight
            admitted = float(limit.count)
        else:
            admitted = limit.burst - 1 + window / limit.interval
        if pattern.endswith("setStatus"):
            # "special", no number published: budgeted at the 600 a
            # minute, with no call to spare; a 429 only skips one status.
            assert admitted <= count, pattern
            continue
        assert admitted + 1 <= count, pattern


def test_one_off_calls_are_windows_and_streamed_ones_gcra() -> None:
    windows = {p for p, limit in DEFAULT_LIMITS.items() if isinstance(limit, Window)}
    assert windows == {
        "slack:*:chat.startStream",
        "slack:*:chat.stopStream",
        "slack:*:assistant.threads.setStatus",
        "slack:*:assistant.threads.*",
    }
    assert DEFAULT_LIMITS["slack:*:chat.startStream"] == Window(19, 61)
    # Squeezed the way the Slack tests squeeze a minute, a window is still safe.
    start = DEFAULT_LIMITS["slack:*:chat.startStream"]
    assert Limit(start.count, 6, burst=start.burst) == Limit(19, 6)


def test_the_tier_window_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_TIER_WINDOW", "90")
    table = load_state_settings().limit_table()
    assert table.lookup("slack:T1:chat.stopStream") == Window(19, 90)
    assert table.lookup("slack:T1:chat.update") == DEFAULT_LIMITS["slack:*:chat.update"]


def test_the_status_budget_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_LIMITS["slack:*:assistant.threads.setStatus"] == Window(600, 61)
    monkeypatch.setenv("SLACK_STATUS_PER_MINUTE", "120")
    table = load_state_settings().limit_table()
    assert table.lookup("slack:T1:assistant.threads.setStatus") == Window(120, 61)
    assert table.lookup("slack:T1:assistant.threads.setTitle") == Window(19, 61)


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
    table = settings.limit_table()
    assert table.lookup("slack:T9:chat.update") == Limit(30, 60)
    assert table.lookup("x:y") == Limit(2, 1, burst=4)
    assert table.lookup("slack:T9:chat.startStream") == Window(20, 60)
    assert table.lookup("discord:global") == DEFAULT_LIMITS["discord:global"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REDIS_URL", "http://localhost:6379", "invalid setting REDIS_URL: "),
        ("CONVERSATION_TTL", "-5", "invalid setting CONVERSATION_TTL: "),
        ("RATE_LIMITS", '{"a:*": "fast"}', "RATE_LIMITS: Value error, a:*: 'fast' is not COUNT"),
        ("RATE_LIMITS", "{not json", "invalid setting RATE_LIMITS: not valid JSON"),
        ("INFLIGHT_TIMEOUT", "6", "invalid settings: INFLIGHT_TIMEOUT must be at least twice"),
        ("RATE_LIMITS", '{"a:*": "2.5/60/window"}', "a:*: '2.5/60/window': a window's COUNT"),
        ("RATE_TIER_WINDOW", "0.5", "invalid setting RATE_TIER_WINDOW: "),
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
