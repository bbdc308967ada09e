"""``chatrelay check``: one line per dependency, reached for real (the fake Slack,
Discord and model servers, the machine's Redis), and an exit code that says
whether all is well."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from bots.check import Finding, all_well, run_checks
from bots.discord.settings import load_discord_settings
from bots.slack.preflight import REQUIRED_SCOPES
from bots.slack.settings import load_slack_settings
from core.config import load_settings
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.llm_server import FakeLLMServer, error_response
from tests.fakes.slack_server import FakeSlack
from tests.test_cli import REPO, chatrelay

REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("SLACK_", "DISCORD_", "LLM_", "REDIS_")):
            monkeypatch.delenv(name)
    if REDIS_URL:
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)


def by_name(findings: list[Finding]) -> dict[str, Finding]:
    return {f.name: f for f in findings}


async def test_everything_configured_and_reachable(tmp_path: Path) -> None:
    async with FakeLLMServer() as llm, FakeSlack(team_id="T1") as slack, FakeDiscord() as discord:
        settings = load_settings(llm_base_url=llm.base_url, llm_model="m", llm_api_key="sk-x")
        found = by_name(
            await run_checks(
                settings,
                load_slack_settings(
                    slack_bot_token="xoxb-test",
                    slack_app_token="xapp-test",
                    slack_api_url=slack.api_url,
                ),
                load_discord_settings(
                    discord_bot_token=discord.bot_token, discord_api_url=discord.api_url
                ),
            )
        )
        asked = llm.requests[0].json
        base_url = llm.base_url
    assert all_well(list(found.values())), found
    assert [f.status for f in found.values()] == ["ok"] * 6
    assert found["redis"].detail.startswith(REDIS_URL or "embedded")
    assert found["model"].detail.startswith(f"m at {base_url}: answered in")
    assert asked["max_tokens"] == 1  # one token, not an answer's worth
    assert "team" in found["slack"].detail and "Socket Mode" in found["slack"].detail
    assert "MESSAGE_CONTENT" in found["discord"].detail


async def test_refused_tokens_and_a_failing_model_are_one_line_each() -> None:
    async with FakeLLMServer() as llm, FakeSlack(team_id="T1") as slack, FakeDiscord() as discord:
        llm.enqueue(error_response(401, "Incorrect API key provided"))
        settings = load_settings(
            llm_base_url=llm.base_url, llm_model="m", llm_api_key="sk-x", llm_max_retries=0
        )
        found = by_name(
            await run_checks(
                settings,
                load_slack_settings(
                    slack_bot_token="xoxb-wrong",
                    slack_app_token="xapp-test",
                    slack_api_url=slack.api_url,
                ),
                load_discord_settings(
                    discord_bot_token="wrong-token", discord_api_url=discord.api_url
                ),
            )
        )
    assert not all_well(list(found.values()))
    assert found["model"].status == "FAIL" and "Incorrect API key" in found["model"].detail
    assert found["slack"] == Finding(
        "slack", "FAIL", "Slack refused SLACK_BOT_TOKEN (invalid_auth)"
    )
    assert found["discord"] == Finding("discord", "FAIL", "Discord refused DISCORD_BOT_TOKEN (401)")
    assert all("\n" not in f.detail for f in found.values())
    assert not any("wrong" in f.detail for f in found.values())  # no token, in any line


def test_the_command_prints_a_table_and_exits_1_when_something_fails(tmp_path: Path) -> None:
    (tmp_path / "channels.toml").write_text('[[channels]]\nplatform = "slack"\nid = "C1"\n')
    env = {"REDIS_URL": "redis://127.0.0.1:1", "PYTHONPATH": str(REPO)}
    done = chatrelay("check", env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["settings", "ok"],
        ["channels", "ok"],
        ["redis", "FAIL"],
        ["model", "ok"],
        ["slack", "skip"],
        ["discord", "skip"],
    ]
    assert "channels.toml: 1 channel rules" in lines[1]
    assert "cannot reach Redis at redis://127.0.0.1:1" in lines[2]


def test_a_bad_channels_file_fails_its_line(tmp_path: Path) -> None:
    (tmp_path / "channels.toml").write_text('[[channels]]\nplatform = "slack"\nid = "C1"\nx = 1\n')
    done = chatrelay("check", env={"REDIS_URL": REDIS_URL or "redis://127.0.0.1:1"}, cwd=tmp_path)
    assert done.returncode == 1
    assert "channels  FAIL  invalid channels file" in done.stdout


@pytest.mark.parametrize("manifest", ["slack-manifest.yml", "slack-manifest-socket.yml"])
def test_the_scopes_check_asks_for_are_the_manifests(manifest: str) -> None:
    data = yaml.safe_load((REPO / "deploy" / manifest).read_text())
    assert frozenset(data["oauth_config"]["scopes"]["bot"]) == REQUIRED_SCOPES
