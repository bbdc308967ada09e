"""The metrics: prometheus_client's exposition (both formats, parsed with its own
parsers), the build and runtime metrics, labels that stay bounded, and each hook
fed by the real component it watches (the LLM client against the fake model,
Slack's client against the fake Slack, Discord's learner, the rate budget against
a real Redis that goes away and comes back)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.errors import SlackApiError

from bots.discord.limits import RateLimitLearner, route_name
from bots.ops import metrics_app
from bots.slack.api import SafeWebClient
from core.llm.client import LLMClient, RetryPolicy, Timeouts
from core.llm.events import StreamError, TextDelta
from core.llm.messages import ChatMessage
from core.llm.provider import Provider
from core.reply.budget import Limit, LimitTable, LocalBudget
from core.service.intake import IntakeLog, outcome_metric
from core.state.buckets import RedisBudget
from core.state.connection import EmbeddedRedis, connect
from core.state.keys import Keys
from core.telemetry.metrics import MAX_LABEL_VALUES, OTHER, ChatrelayMetrics, scope_kind
from tests.fakes.llm_server import FakeLLMServer, FakeResponse, error_response, sse_response
from tests.fakes.slack_server import FakeSlack
from tests.fakes.streams import chat_stream, split_events
from tests.state.conftest import keys

__all__ = ["keys"]

REPO = Path(__file__).resolve().parent.parent
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def busy_metrics() -> ChatrelayMetrics:
    """Metrics with a sample in every labelled family."""
    metrics = ChatrelayMetrics()
    observer = metrics.observer("slack")
    observer.first_token(0.2)
    observer.first_visible(0.4)
    observer.visible(0.5)
    observer.rate_limited("slack:T1:chat.postMessage:C1", 2.0)
    metrics.replies_started.inc("slack")
    metrics.replies_ended.inc("slack", "done")
    metrics.active.inc("slack")
    metrics.edits.observe(3, "slack")
    metrics.tokens.inc("m", "out", amount=5)
    metrics.slack_api_error("chat.update", "message_not_found")
    metrics.llm.request("m@host")
    metrics.llm.error("m@host", "http_5xx", False)
    metrics.llm.fallback("m@host", "http_5xx")
    metrics.redis_error("acquire")
    metrics.inflight_event("finalised", "discord")
    metrics.discord_invalid.inc("401")
    return metrics


def test_the_exposition_parses_in_both_formats() -> None:
    metrics = busy_metrics()
    text, text_type = metrics.registry.exposition("")
    assert text_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    om, om_type = metrics.registry.exposition(OPENMETRICS)
    assert om_type.startswith("application/openmetrics-text")
    om_families = {f.name: f for f in openmetrics_families(om.decode())}
    assert om.decode().endswith("# EOF\n")
    for name in ("chatrelay_replies", "chatrelay_rate_limited", "chatrelay_llm_errors"):
        assert families[name].type == om_families[name].type == "counter"
    assert families["chatrelay_time_to_first_visible_seconds"].type == "histogram"
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)


def test_build_info_and_the_runtime_collectors() -> None:
    families = {
        f.name: f for f in text_string_to_metric_families(ChatrelayMetrics().registry.render())
    }
    [build] = families["chatrelay_build_info"].samples  # a gauge of 1 in the text format
    assert build.value == 1
    assert build.labels["version"] and build.labels["python_version"].count(".") == 2
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds"):
        assert name in families
    assert "python_info" in families and "python_gc_collections" in families


def test_each_metrics_object_has_its_own_registry() -> None:
    one, two = ChatrelayMetrics(), ChatrelayMetrics()
    one.replies_started.inc("slack")
    assert one.replies_started.value("slack") == 1
    assert two.replies_started.value("slack") == 0


@pytest.mark.parametrize(
    ("scope", "kind"),
    [
        ("slack:T123:chat.postMessage:C1", "slack:chat.postMessage"),
        ("slack:T123:chat.update", "slack:chat.update"),
        ("slack:T9:assistant.threads.setStatus", "slack:assistant.threads.setStatus"),
        ("discord:channel:1234567890", "discord:channel"),
        ("discord:interaction:0f1e2d3c4b5a69788796", "discord:interaction"),
        ("discord:global", "discord:global"),
        ("test:channel", OTHER),
        ("slack:T1", OTHER),
        ("slack:T1:<script>:C1", OTHER),
    ],
)
def test_a_scope_is_counted_by_its_kind(scope: str, kind: str) -> None:
    assert scope_kind(scope) == kind


def test_rate_limits_in_a_thousand_channels_are_one_series() -> None:
    metrics = ChatrelayMetrics()
    observer = metrics.observer("discord")
    for channel in range(1000):
        observer.rate_limited(f"discord:channel:{channel}", 1.0)
        observer.rate_limited(f"slack:T{channel}:chat.postMessage:C{channel}", 1.0)
    found = [
        s
        for f in text_string_to_metric_families(metrics.registry.render())
        for s in f.samples
        if s.name == "chatrelay_rate_limited_total"
    ]
    assert {s.labels["scope"]: s.value for s in found} == {
        "discord:channel": 1000,
        "slack:chat.postMessage": 1000,
    }


def test_every_label_takes_a_bounded_number_of_values() -> None:
    metrics = ChatrelayMetrics()
    for n in range(MAX_LABEL_VALUES * 3):
        metrics.slack_api_error(f"method.{n}", f"error_{n}")
    samples = [
        s
        for f in text_string_to_metric_families(metrics.registry.render())
        for s in f.samples
        if s.name == "chatrelay_platform_api_errors_total"
    ]
    assert len(samples) == MAX_LABEL_VALUES + 1
    assert metrics.api_errors.value("slack", OTHER, OTHER) == MAX_LABEL_VALUES * 2


@pytest.fixture
async def metrics_server() -> AsyncIterator[tuple[ChatrelayMetrics, str]]:
    metrics = busy_metrics()
    runner = web.AppRunner(metrics_app(metrics))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield metrics, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_metrics_app_negotiates_the_format(
    metrics_server: tuple[ChatrelayMetrics, str],
) -> None:
    _, base = metrics_server
    async with httpx.AsyncClient(trust_env=False) as http:
        plain = await http.get(f"{base}/metrics")
        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'chatrelay_rate_limited_total{scope="slack:chat.postMessage"} 1.0' in plain.text
        # What Prometheus sends: OpenMetrics first.
        prometheus_accept = (
            "application/openmetrics-text;version=1.0.0;q=0.5,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        )
        om = await http.get(f"{base}/metrics", headers={"Accept": prometheus_accept})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert list(openmetrics_families(om.text))
        raw = await http.get(
            f"{base}/metrics", headers={"Accept-Encoding": "gzip", "Accept": OPENMETRICS}
        )
        assert raw.headers["content-encoding"] == "gzip"
        assert (await http.get(f"{base}/healthz")).status_code == 404


# ------------------------------------------------------------------ the hooks


async def test_llm_errors_and_fallbacks_by_provider_and_reason(llm_server: FakeLLMServer) -> None:
    metrics = ChatrelayMetrics()
    primary = Provider(llm_server.base_url, "primary", api_key="k")
    backup = Provider(llm_server.base_url, "backup", api_key="k")
    client = LLMClient(
        [primary, backup],
        timeouts=Timeouts(connect=2, first_token=5, idle=5),
        retry=RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.01),
        observer=metrics.llm,
    )
    llm_server.enqueue(
        error_response(503, "overloaded"),
        error_response(429, "slow down", retry_after=60),  # longer than we wait: fall back
        sse_response(chat_stream(["Fine."])),
        FakeResponse(chunks=split_events(chat_stream(["Half", " of", " it"])), cut_after=2),
    )
    try:
        first = [e async for e in client.stream([ChatMessage("user", "hi")])]
        assert [e.text for e in first if isinstance(e, TextDelta)] == ["Fine."]
        second = [e async for e in client.stream([ChatMessage("user", "again")])]
        assert isinstance(second[-1], StreamError)
    finally:
        await client.aclose()
    llm = metrics.llm_errors
    assert llm.value(primary.label, "http_5xx", "start") == 1
    assert llm.value(primary.label, "http_429", "start") == 1
    assert llm.value(primary.label, "truncated", "stream") == 1  # after its first token
    assert metrics.llm_fallbacks.value(primary.label, "http_429") == 1
    assert metrics.llm_requests.value(primary.label) == 3
    assert metrics.llm_requests.value(backup.label) == 1
    assert "slow down" not in metrics.registry.render()  # never a message in a label


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


async def test_slack_api_errors_by_method_and_code(slack: FakeSlack) -> None:
    metrics = ChatrelayMetrics()
    client = SafeWebClient(token="xoxb-test", base_url=slack.api_url)
    client.on_error = metrics.slack_api_error
    posted = await client.chat_postMessage(channel="C1", text="hello")
    with pytest.raises(SlackApiError):
        await client.chat_update(channel="C1", ts="9.000001", text="x")
    slack.fail("chat.update", "an_error_nobody_has_heard_of_C0123ABC")
    with pytest.raises(SlackApiError):
        await client.chat_update(channel="C1", ts=posted["ts"], text="x")
    slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=1)
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C1", text="again")
    assert metrics.api_errors.value("slack", "chat.update", "message_not_found") == 1
    assert metrics.api_errors.value("slack", "chat.update", OTHER) == 1
    assert metrics.api_errors.value("slack", "chat.postMessage", "ratelimited") == 1
    assert "C0123ABC" not in metrics.registry.render()


def test_discord_routes_carry_no_id_token_or_emoji() -> None:
    token_path = "/api/v10/webhooks/123456/aW50ZXJhY3Rpb246c2VjcmV0/messages/@original"
    assert route_name("PATCH", token_path) == "PATCH /webhooks/{id}/{token}/messages/@original"
    assert route_name("POST", "/api/v10/channels/42/messages") == "POST /channels/{id}/messages"
    reaction = "/api/v10/channels/42/messages/43/reactions/%F0%9F%91%8D/@me"
    assert route_name("PUT", reaction) == "PUT /channels/{id}/messages/{id}/reactions/{emoji}/@me"


async def test_discord_api_errors_by_route_and_status() -> None:
    metrics = ChatrelayMetrics()
    learner = RateLimitLearner(LocalBudget(LimitTable({"discord:channel:*": Limit(4, 5)})))
    learner.on_error = metrics.discord_api_error
    await learner.learn("PATCH", "/api/v10/channels/42/messages/43", 404, {})
    await learner.learn("POST", "/api/v10/channels/42/messages", 200, {})
    await learner.learn("POST", "/api/v10/channels/77/messages", 429, {"Retry-After": "0.1"})
    errors = metrics.api_errors
    assert errors.value("discord", "PATCH /channels/{id}/messages/{id}", "404") == 1
    assert errors.value("discord", "POST /channels/{id}/messages", "429") == 1
    assert errors.value("discord", "POST /channels/{id}/messages", "200") == 0


async def test_a_redis_outage_counts_errors_and_degraded_time(tmp_path: Path, keys: Keys) -> None:
    metrics = ChatrelayMetrics()
    server = EmbeddedRedis(tmp_path)
    client = connect(server.start())
    budget = RedisBudget(client, keys, LimitTable({"s": Limit(100, 1)}), retry_interval=0.05)
    budget.on_redis_error = metrics.redis_error
    budget.on_degraded = metrics.redis_degraded
    try:
        await budget.acquire("s")
        assert metrics.degraded_seconds() == 0
        server.stop()
        await budget.acquire("s")
        assert budget.degraded
        assert metrics.redis_errors.value("acquire") == 1
        render = metrics.registry.render()
        assert "chatrelay_redis_degraded 1.0" in render
        await asyncio.sleep(0.3)  # degraded for at least this long (asserted below)
        async with asyncio.timeout(5):  # it keeps asking
            while metrics.redis_errors.value("probe") < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        server.start()
        async with asyncio.timeout(5):
            while budget.degraded:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        down = metrics.degraded_seconds()
        assert down >= 0.3
        await asyncio.sleep(0.1)
        assert metrics.degraded_seconds() == down  # no longer counting
        assert "chatrelay_redis_degraded 0.0" in metrics.registry.render()
    finally:
        await budget.aclose()
        await client.delete(keys.bucket("s"), keys.bucket("s") + "#log")
        await client.aclose()
        server.stop()


def test_intake_counts_messages_received_and_their_outcomes() -> None:
    metrics = ChatrelayMetrics()
    intake = IntakeLog(outcome_metric(metrics, "slack"))
    for event in ("E1", "E2", "E3"):
        intake.received(event)
    intake.settle("E1", "answered")
    intake.settle("E2", "deduplicated")
    assert metrics.messages_received.value("slack") == 3
    assert metrics.messages.value("slack", "answered") == 1
    assert metrics.messages.value("slack", "deduplicated") == 1


# ------------------------------------------------------------------ imports


ENTRY = """
import atexit, json, sys
record, *argv = sys.argv[1:]
atexit.register(lambda: open(record, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["chatrelay", *argv]
from bots.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("argv", [["--help"], ["ask", "hi"]])
def test_ask_and_help_never_import_prometheus_client(tmp_path: Path, argv: list[str]) -> None:
    record = tmp_path / "modules.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, str(record), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(record.read_text())
    assert not [m for m in loaded if m.split(".")[0] == "prometheus_client"]
