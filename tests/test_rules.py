"""The per-channel rules file shared by the Slack and Discord adapters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import ConfigError
from core.rules import LiveRules, load_rules

EXAMPLE = """
[defaults]
mode = "mention"
handoff_quiet_minutes = 30

[[channels]]
platform = "slack"
id = "C1"
mode = "auto"
system_prompt = "You are ACME support."
model = "small-model"
agents = ["UAGENT"]
agent_groups = ["SGROUP"]

[[channels]]
platform = "discord"
id = "42"
mode = "auto"
thread_per_message = true
handoff_quiet_minutes = 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channels.toml"
    path.write_text(text)
    return path


def test_example_file_gives_each_channel_its_policy(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, EXAMPLE))
    slack = rules.policy("slack", "C1")
    assert slack.mode == "auto" and slack.model == "small-model"
    assert slack.system_prompt == "You are ACME support."
    assert slack.handoff_quiet_minutes == 30  # from defaults
    assert slack.is_agent("UAGENT") and slack.is_agent("USOMEONE", {"SGROUP"})
    assert not slack.is_agent("UCUSTOMER", {"SOTHER"})
    discord = rules.policy("discord", "42")
    assert discord.thread_per_message and discord.handoff_quiet_minutes == 0
    assert rules.auto_channels("slack") == ["C1"]


def test_unlisted_channel_and_same_id_other_platform_get_defaults(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, EXAMPLE))
    assert rules.policy("slack", "C999").mode == "mention"
    assert rules.policy("discord", "C1").mode == "mention"


def test_channels_without_a_rule_share_one_frozen_policy(tmp_path: Path) -> None:
    """Every reply holds its channel's policy while it streams: those of channels
    without a rule are one object, not one per event, and no one can change it."""
    rules = load_rules(write(tmp_path, EXAMPLE))
    shared = rules.policy("discord", "7")
    assert rules.policy("discord", "8") is shared
    assert rules.policy("slack", "C999") is shared
    assert rules.policy("slack", "C1") is not shared  # a rule of its own
    with pytest.raises(ValidationError):
        shared.mode = "auto"


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    rules = load_rules(tmp_path / "nope.toml")
    assert rules.channels == [] and rules.policy("slack", "C1").mode == "mention"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[channels]]\nplatform = "irc"\nid = "x"\n', "channels.0.platform"),
        ('[[channels]]\nplatform = "slack"\nid = "C1"\nmode = "always"\n', "channels.0.mode"),
        ("[defaults]\nhandoff_quiet_minutes = -1\n", "defaults.handoff_quiet_minutes"),
        ('[[channels]]\nplatform = "slack"\n', "channels.0.id"),
        ("[defaults\n", "invalid channels file"),
        ("typo = 1\n", "typo"),
        ('[[channels]]\nplatform = "slack"\nid = "C1"\nmodle = "m"\n', "channels.0.modle"),
        ('[defaults]\nmdoe = "auto"\n', "defaults.mdoe"),
        (
            '[[channels]]\nplatform = "slack"\nid = "C1"\n'
            '[[channels]]\nplatform = "slack"\nid = "C1"\nmode = "auto"\n',
            "channel slack C1 has two rules",
        ),
    ],
)
def test_bad_file_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_rules(write(tmp_path, text))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_live_rules_reload_on_change_and_keep_the_last_good(tmp_path: Path) -> None:
    path = write(tmp_path, '[[channels]]\nplatform = "slack"\nid = "C1"\nmode = "auto"\n')
    live = LiveRules(path, interval=0.01)
    assert live.policy("slack", "C1").mode == "auto"
    assert not live.reload_if_changed()  # unchanged
    path.write_text('[[channels]]\nplatform = "slack"\nid = "C1"\nmode = "mention"\n')
    os.utime(path, (1, 1))  # a different mtime even on coarse clocks
    assert live.reload_if_changed()
    assert live.policy("slack", "C1").mode == "mention"
    path.write_text("[broken\n")
    os.utime(path, (2, 2))
    assert not live.reload_if_changed()  # logged, ignored
    assert live.policy("slack", "C1").mode == "mention"


def test_environment_never_leaks_into_the_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHANNELS", "x")
    monkeypatch.setenv("DEFAULTS", '{"mode": "auto"}')
    assert load_rules(tmp_path / "missing.toml").policy("slack", "C1").mode == "mention"
    path = write(tmp_path, '[[channels]]\nplatform = "slack"\nid = "C1"\n')
    assert load_rules(path).policy("slack", "C2").mode == "mention"
