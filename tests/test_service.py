"""``chatrelay run`` as a process: health and readiness on ``PORT``, metrics on
``METRICS_PORT`` (and not on ``PORT``), and SIGTERM during a reply ending with
the message finalised."""

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
from prometheus_client.parser import text_string_to_metric_families

from core.state.keys import Keys
from tests.fakes.llm_server import FakeLLMServer, FakeResponse
from tests.fakes.slack_server import FakeSlack
from tests.fakes.streams import chat_stream, split_events
from tests.state.conftest import keys, redis, redis_url

__all__ = ["keys", "redis", "redis_url"]

REPO = Path(__file__).resolve().parent.parent


def llm_provider(llm_server: FakeLLMServer) -> str:
    """The ``provider`` label of the fake model: ``Provider.label``."""
    return f"test-model@{llm_server.base_url.split('://', 1)[1].split('/', 1)[0]}"


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
) -> tuple[asyncio.subprocess.Process, str, str]:
    """The process, the base URL of ``PORT`` and that of ``METRICS_PORT``."""
    port, metrics_port = free_port(), free_port()
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
        METRICS_PORT=str(metrics_port),
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
    return process, base, f"http://127.0.0.1:{metrics_port}"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels, read with prometheus_client's parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def poll_metrics(
    http: httpx.AsyncClient, base: str, name: str, value: float, **labels: str
) -> Samples:
    """The metrics once sample ``name{labels}`` reaches ``value`` (a reply is counted
    just after its last call)."""
    async with asyncio.timeout(10):
        while True:
            found = samples((await http.get(f"{base}/metrics")).text)
            if sample(found, name, **labels) == value:
                return found
            await asyncio.sleep(0.05)


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
    process, base, metrics_base = await start_service(slack, llm_server, redis_url, keys, tmp_path)
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
            ready = (await http.get(f"{base}/readyz")).json()
            assert ready["checks"] == {"redis": True, "slack": True}
            assert (
                await http.get(f"{base}/metrics")
            ).status_code == 404  # not beside Slack's events
            assert (await http.get(f"{metrics_base}/healthz")).status_code == 404

            await slack.deliver_socket(slack.user_message("C1", "quick one", mention=True))
            await slack.wait_calls("chat.stopStream", timeout=15)
            found = await poll_metrics(
                http, metrics_base, "chatrelay_replies_total", 1, platform="slack", outcome="done"
            )
            assert sample(found, "chatrelay_staleness_seconds_count", platform="slack")
            assert (
                sample(found, "chatrelay_tokens_total", model="test-model", direction="out") == 20
            )
            assert sample(found, "chatrelay_active_streams", platform="slack") == 0
            assert sample(found, "chatrelay_messages_received_total", platform="slack") == 1
            assert sample(found, "chatrelay_llm_requests_total", provider=llm_provider(llm_server))
            assert sample(found, "chatrelay_redis_degraded") == 0
            assert sample(found, "process_resident_memory_bytes")
            [build] = [labels for name, labels in found if name == "chatrelay_build_info"]
            assert dict(build)["version"]
            openmetrics = await http.get(
                f"{metrics_base}/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            )
            assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
            assert openmetrics.text.endswith("# EOF\n")

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
