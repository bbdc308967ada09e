"""``chatrelay run`` as a process: health, readiness and metrics over HTTP, and
SIGTERM during a reply ending with the message finalised."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.state.keys import Keys
from tests.fakes.llm_server import FakeLLMServer, FakeResponse
from tests.fakes.slack_server import FakeSlack
from tests.fakes.streams import chat_stream, split_events
from tests.state.conftest import keys, redis, redis_url

__all__ = ["keys", "redis", "redis_url"]

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(team_id="T1", bot_user_id="UBOT", bot_id="BBOT") as server:
        yield server


async def start_service(
    slack: FakeSlack, llm_server: FakeLLMServer, redis_url: str, keys: Keys, tmp_path: Path
) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "SLACK_", "REDIS"))}
    env.update(
        PYTHONPATH=str(REPO),
        LLM_BASE_URL=llm_server.base_url,
        LLM_MODEL="test-model",
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_APP_TOKEN="xapp-test",
        SLACK_API_URL=slack.api_url,
        SLACK_EDIT_INTERVAL="0.2",
        REDIS_URL=redis_url,
        REDIS_PREFIX=keys.prefix,
        PORT=str(port),
        SHUTDOWN_GRACE_S="0.5",
        LOG_FORMAT="json",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "run",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(trust_env=False) as http, asyncio.timeout(30):
        while True:
            try:
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.returncode is not None:
                raise AssertionError((await process.stderr.read()).decode())  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
    return process, base


async def poll_metrics(http: httpx.AsyncClient, base: str, line: str) -> str:
    """The metrics text once ``line`` shows (a reply is counted just after its last call)."""
    async with asyncio.timeout(10):
        while line not in (text := (await http.get(f"{base}/metrics")).text):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return text


async def test_metrics_then_sigterm_mid_reply_finalises_it(
    slack: FakeSlack,
    llm_server: FakeLLMServer,
    redis_url: str,
    keys: Keys,
    redis: object,
    tmp_path: Path,
) -> None:
    llm_server.enqueue(FakeResponse(chunks=split_events(chat_stream(["Quick", " answer."]))))
    slow = chat_stream(["word "] * 400)
    llm_server.enqueue(FakeResponse(chunks=split_events(slow), chunk_delay=0.05))
    process, base = await start_service(slack, llm_server, redis_url, keys, tmp_path)
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
            ready = (await http.get(f"{base}/readyz")).json()
            assert ready["checks"] == {"redis": True, "slack": True}

            await slack.deliver_socket(slack.user_message("C1", "quick one", mention=True))
            await slack.wait_calls("chat.stopStream", timeout=15)
            done = 'chatrelay_replies_total{platform="slack",outcome="done"} 1'
            metrics = await poll_metrics(http, base, done)
            assert 'chatrelay_staleness_seconds_count{platform="slack"}' in metrics
            assert 'chatrelay_tokens_total{model="test-model",direction="out"} 20' in metrics
            assert 'chatrelay_active_streams{platform="slack"} 0' in metrics

            await slack.deliver_socket(slack.user_message("C2", "long one", mention=True))
            await slack.wait_for(
                lambda: any(
                    c.params.get("channel") == "C2" for c in slack.calls_to("chat.appendStream")
                ),
                timeout=15,
            )
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await process.wait()
        stderr = (await process.stderr.read()).decode()  # type: ignore[union-attr]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, stderr
    [reply] = slack.bot_messages("C2")
    shown = slack.rendered("C2", reply.ts)
    assert shown.startswith("word word"), stderr[-3000:]
    assert "interrupted" in shown
    assert not reply.streaming
    assert '"reply_id"' in stderr  # JSON logs carry the reply id
    assert "xoxb-test" not in stderr and "xapp-test" not in stderr
