"""``chatrelay run --platform/--slack-mode``: which platforms a process serves,
and one clear line when the choice can't work."""

from __future__ import annotations

import pytest

from bots.cli import _parser, _select
from bots.discord.settings import load_discord_settings
from bots.slack.settings import load_slack_settings
from core.config import ConfigError


@pytest.fixture(autouse=True)
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "discord")
    for name in ("SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)


def select(*argv: str) -> tuple[bool, bool, bool]:
    slack, discord = _select(
        _parser().parse_args(["run", *argv]),
        load_slack_settings(slack_signing_secret="s"),
        load_discord_settings(),
    )
    return slack.configured, slack.socket_mode, discord.configured


def test_all_platforms_by_default_and_one_when_asked() -> None:
    assert select() == (True, False, True)
    assert select("--platform", "slack") == (True, False, False)
    assert select("--platform", "discord") == (False, False, True)


def test_socket_mode_without_an_app_token_is_one_clear_line() -> None:
    with pytest.raises(ConfigError, match=r"^invalid setting SLACK_APP_TOKEN: required for"):
        select("--slack-mode", "socket")


def test_http_mode_without_a_signing_secret_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    args = _parser().parse_args(["run", "--slack-mode", "http"])
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        _select(args, load_slack_settings(), load_discord_settings())


def test_an_empty_app_token_means_http_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_APP_TOKEN", "  ")
    assert select() == (True, False, True)
