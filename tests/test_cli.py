"""``chatrelay ask`` and ``chatrelay run`` as a user runs them: real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.llm_server import FakeLLMServer, sse_response
from tests.fakes.streams import chat_stream

REPO = Path(__file__).resolve().parent.parent


def chatrelay(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path,
    stdin: str | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "SYSTEM_PROMPT"))}
    clean["PYTHONPATH"] = str(REPO)
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bots.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean,
        cwd=cwd,
        timeout=timeout,
    )


def test_ask_with_no_settings_streams_the_demo(tmp_path: Path) -> None:
    done = chatrelay("ask", "what is this?", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "built-in demo model" in done.stdout
    assert "“what is this?”" in done.stdout
    assert "LLM_BASE_URL" in done.stdout
    assert "error" not in done.stderr


def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = chatrelay("ask", "hi", env={"LLM_API": "soap"}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatrelay: invalid setting LLM_API:")


def test_unreachable_provider_fails_with_one_clear_line(tmp_path: Path) -> None:
    env = {
        "LLM_BASE_URL": "http://127.0.0.1:9/v1",  # discard port: nothing listens
        "LLM_MODEL": "m",
        "LLM_MAX_RETRIES": "0",
        "LOG_LEVEL": "ERROR",
    }
    done = chatrelay("ask", "hi", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("chatrelay: error: could not connect")


def test_run_without_platforms_is_a_console_chat(tmp_path: Path) -> None:
    done = chatrelay("run", cwd=tmp_path, stdin="hello there\n/reset\n/quit\n")
    assert done.returncode == 0, done.stderr
    assert "chatrelay console" in done.stdout
    assert "bot> **This is chatrelay's built-in demo model" in done.stdout
    assert "“hello there”" in done.stdout
    assert "(conversation forgotten)" in done.stdout


@pytest.mark.parametrize("argv", [["--help"], ["ask", "--help"]])
def test_help(tmp_path: Path, argv: list[str]) -> None:
    done = chatrelay(*argv, cwd=tmp_path)
    assert done.returncode == 0 and "usage: chatrelay" in done.stdout


async def run_ask_against(server: FakeLLMServer, tmp_path: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "SYSTEM_PROMPT"))}
    env.update(
        PYTHONPATH=str(REPO),
        LLM_BASE_URL=server.base_url,
        LLM_MODEL="m",
        LLM_MAX_RETRIES="0",
        LOG_LEVEL="ERROR",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "ask",
        "hi",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_ask_prints_reasoning_apart_and_exits_0(
    llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    llm_server.enqueue(sse_response(chat_stream(["The ", "answer."], reasoning=["Thinking."])))
    code, out, err = await run_ask_against(llm_server, tmp_path)
    assert code == 0
    assert out == "The answer.\n"
    assert "[reasoning] Thinking." in err


async def test_ask_failing_mid_reply_keeps_text_and_says_why(
    llm_server: FakeLLMServer, tmp_path: Path
) -> None:
    body = chat_stream(["Partial ", "answer"], error_after=2, error_message="upstream exploded")
    llm_server.enqueue(sse_response(body))
    code, out, err = await run_ask_against(llm_server, tmp_path)
    assert code == 1
    assert out.startswith("Partial answer")
    assert err.strip().splitlines()[-1] == "chatrelay: error: upstream exploded"


FREEZES = """
import atexit, gc
calls = []
atexit.register(lambda: print(len(calls), gc.freeze is counted))  # runs last
def counted():
    calls.append(1)
gc.freeze = counted
from bots.cli import _skip_collections_at_exit
_skip_collections_at_exit()
_skip_collections_at_exit()
"""


def test_ask_freezes_the_collector_once_at_exit(tmp_path: Path) -> None:
    """``ask`` has ``gc.freeze`` run at exit (finalisation then skips its full
    collections), once however often ``main`` runs in one process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", FREEZES], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1 True\n"
