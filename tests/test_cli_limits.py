"""The platforms' default rate limits: each adapter declares its own
(``bots/slack/limits.py``, ``bots/discord/limits.py``) and the composition
merges them (``bots.cli.platform_limits``) for ``open_state``, behind
``RATE_LIMITS``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bots.cli import platform_limits
from bots.discord.limits import DEFAULT_LIMITS as DISCORD_LIMITS
from bots.discord.limits import GLOBAL_SCOPE, channel_scope, interaction_scope
from bots.slack.api import scope
from bots.slack.limits import DEFAULT_LIMITS as SLACK_LIMITS
from bots.slack.settings import load_slack_settings
from core.config import ConfigError
from core.reply.budget import Limit, LimitTable, Window
from core.state.settings import load_state_settings

DEFAULT_LIMITS = platform_limits()
"""Both adapters' defaults with the default settings, as ``chatrelay run`` has them."""

SETTINGS = ["RATE_LIMITS", "RATE_TIER_WINDOW", "SLACK_STATUS_PER_MINUTE", "SLACK_BOT_TOKEN"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_the_documented_limits_by_default() -> None:
    table = load_state_settings().limit_table(platform_limits(load_slack_settings()))
    assert table.lookup("slack:T1:chat.update") == DEFAULT_LIMITS["slack:*:chat.update"]
    assert table.lookup("discord:channel:42") == Limit(4, 5)


def test_both_adapters_always_merged_never_overlapping() -> None:
    assert DEFAULT_LIMITS == {**SLACK_LIMITS, **DISCORD_LIMITS}
    assert all(pattern.startswith("slack:") for pattern in SLACK_LIMITS)
    assert all(pattern.startswith("discord:") for pattern in DISCORD_LIMITS)
    # Whatever the platforms configured, the same table (replicas agree on it).
    assert platform_limits(load_slack_settings()) == DEFAULT_LIMITS


def test_every_scope_an_adapter_names_has_a_default_of_its_own() -> None:
    slack_methods = [
        "chat.update",
        "chat.postMessage",
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
        "assistant.threads.setStatus",
        "assistant.threads.setTitle",
        "assistant.threads.setSuggestedPrompts",
    ]
    slack_table = load_state_settings().limit_table(SLACK_LIMITS)
    for method in slack_methods:
        assert slack_table.lookup(scope("T1", method, "C1")) is not None, method
    discord_table = load_state_settings().limit_table(DISCORD_LIMITS)
    for name in (channel_scope(42), interaction_scope("token"), GLOBAL_SCOPE):
        assert discord_table.lookup(name) is not None, name


def test_every_default_limit_is_window_safe() -> None:
    # GCRA admits burst - 1 + count calls per window, a window its count (in a
    # window at least as long as the platform's): the platform's N must hold,
    # with one call to spare (see bots.slack.limits.default_limits).
    platform = {
        "slack:*:chat.update": (50, 60),
        "slack:*:chat.postMessage:*": (3, 3),
        "slack:*:chat.postMessage": (300, 60),  # the workspace's cap, as the fake assumes it
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
        "slack:*:chat.postMessage",
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
    table = load_state_settings().limit_table(platform_limits(load_slack_settings()))
    assert table.lookup("slack:T1:chat.stopStream") == Window(19, 90)
    assert table.lookup("slack:T1:chat.update") == DEFAULT_LIMITS["slack:*:chat.update"]


def test_the_status_budget_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_LIMITS["slack:*:assistant.threads.setStatus"] == Window(600, 61)
    monkeypatch.setenv("SLACK_STATUS_PER_MINUTE", "120")
    table = load_state_settings().limit_table(platform_limits(load_slack_settings()))
    assert table.lookup("slack:T1:assistant.threads.setStatus") == Window(120, 61)
    assert table.lookup("slack:T1:assistant.threads.setTitle") == Window(19, 61)


def test_rate_limits_come_before_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {
        "slack:*:chat.update": "30/60",
        "x:*": "2/1/4",
        "slack:*:chat.startStream": "20/60/window",
    }
    monkeypatch.setenv("RATE_LIMITS", json.dumps(limits))
    table = load_state_settings().limit_table(platform_limits(load_slack_settings()))
    assert table.lookup("slack:T9:chat.update") == Limit(30, 60)
    assert table.lookup("x:y") == Limit(2, 1, burst=4)
    assert table.lookup("slack:T9:chat.startStream") == Window(20, 60)
    assert table.lookup("discord:global") == DEFAULT_LIMITS["discord:global"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RATE_TIER_WINDOW", "0.5", "invalid setting RATE_TIER_WINDOW: "),
        ("SLACK_STATUS_PER_MINUTE", "0", "invalid setting SLACK_STATUS_PER_MINUTE: "),
    ],
)
def test_bad_values_give_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    """Slack's settings now, read by every ``chatrelay run`` and ``check``
    whether or not Slack is configured, as the state settings were."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_slack_settings()
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_a_post_spends_its_channels_budget_and_its_workspaces() -> None:
    from bots.slack.api import scopes

    assert scopes("T1", "chat.postMessage", "C1") == (
        "slack:T1:chat.postMessage:C1",
        "slack:T1:chat.postMessage",
    )
    assert scopes("T1", "chat.update", "C1") == ("slack:T1:chat.update",)
    table = LimitTable(platform_limits())
    assert table.lookup("slack:T1:chat.postMessage:C1") == Limit(2, 3)
    assert table.lookup("slack:T1:chat.postMessage") == Window(290, 61)
