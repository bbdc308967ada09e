"""OpenTelemetry traces of replies (``core.telemetry.tracing``), with the SDK's in-memory
exporter: a Slack reply end to end (the real slack_bolt/slack_sdk against the
fake Slack, the model over HTTP, a real Redis) is one trace; scopes are named
without their ids; the model client's attempts, the engine's budget waits and
failed calls are spans; and with tracing off nothing of OpenTelemetry is
imported, checked in real processes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from core.clock import MonotonicClock
from core.config import ConfigError
from core.llm.client import LLMClient, RetryPolicy, Timeouts
from core.llm.provider import Provider
from core.reply.budget import Limit, LimitTable, LocalBudget
from core.reply.engine import Reply
from core.reply.pacing import Pacing
from core.reply.sink import RateLimited
from core.service.intake import IntakeLog
from core.service.responder import ReplyRequest
from core.state.keys import ConversationKey
from core.telemetry import logs, tracing
from tests.fakes.llm_server import FakeLLMServer, FakeResponse, error_response
from tests.fakes.recording_sink import RecordingSink
from tests.fakes.slack_server import FakeSlack
from tests.fakes.streams import chat_stream, split_events
from tests.slack.conftest import RunningBot, keys, make_bot, redis, redis_url, slack, state
from tests.slack.test_slack_adapter import socket_mode
from tests.test_cli_imports import ENTRY

__all__ = ["keys", "make_bot", "redis", "redis_url", "slack", "state"]

REPO = Path(__file__).resolve().parent.parent
StartBot = Callable[..., AbstractAsyncContextManager[RunningBot]]


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on for every responder made in the test, into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_process", tracing.Tracing.of(provider))
    yield exporter
    provider.shutdown()


def traced() -> tuple[tracing.Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing.Tracing.of(provider), exporter


def named(found: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in found if span.name == name]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def until_span(exporter: InMemorySpanExporter, name: str, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not named(exporter.get_finished_spans(), name):  # noqa: ASYNC110 - the SDK's list
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- one Slack reply


async def test_a_slack_reply_is_one_trace_from_the_event_to_each_platform_call(
    spans: InMemorySpanExporter, slack: FakeSlack, llm_server: FakeLLMServer, make_bot: StartBot
) -> None:
    pieces = ["Hello", " there", ", this", " is", " the", " answer", "."]
    body = chat_stream(pieces, usage=(31, 7), finish="stop")
    llm_server.enqueue(FakeResponse(chunks=split_events(body), chunk_delay=0.25))
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.addFilter(logs.ReplyIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)
    try:
        async with make_bot(slack_app_token="xapp-test") as running, socket_mode(running, slack):
            sent = time.time_ns()
            delivery = await slack.deliver_socket(
                slack.user_message("C1", "hi?", user="U1", mention=True)
            )
            acked = time.time_ns()
            await slack.wait_calls("chat.stopStream", timeout=15)
            await until_span(spans, tracing.REPLY_SPAN)
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)

    found = spans.get_finished_spans()
    [root] = named(found, tracing.REPLY_SPAN)
    # The trace starts when the event reached the bot (before Slack had its ack),
    # not when the responder got round to it.
    assert delivery.acked and root.start_time is not None
    assert sent <= root.start_time <= acked + 10**9
    assert all(root.start_time <= (span.start_time or 0) for span in found if span is not root)
    trace_id = root.context.trace_id
    assert {span.context.trace_id for span in found} == {trace_id}  # one trace
    assert root.parent is None and root.kind is SpanKind.CONSUMER
    assert {k: v for k, v in attributes(root).items() if k != "chatrelay.reply_id"} == {
        "chatrelay.platform": "slack",
        "chatrelay.workspace": "T1",
        "chatrelay.channel": "C1",
        "chatrelay.outcome": "done",
        "chatrelay.first_token_s": attributes(root)["chatrelay.first_token_s"],
        "chatrelay.first_visible_s": attributes(root)["chatrelay.first_visible_s"],
    }
    assert re.fullmatch(r"[0-9a-f]{32}", attributes(root)["chatrelay.reply_id"])
    children = [span for span in found if span is not root]
    assert all(span.parent is not None for span in children)
    assert {span.parent.span_id for span in children if span.parent} == {root.context.span_id}

    # The model request, by GenAI's semantic conventions.
    [model] = named(found, "chat test-model")
    assert model.kind is SpanKind.CLIENT
    assert attributes(model) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "test-model",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.usage.input_tokens": 31,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "127.0.0.1",
        "server.port": llm_server.port,
        "chatrelay.llm_api": "chat",
        "chatrelay.attempt": 1,
    }
    assert model.status.status_code is StatusCode.UNSET

    # Each platform call: its kind and its scopes' kinds, in the order they happened.
    calls = sorted(
        (span for span in children if span.name.startswith("chatrelay.platform.")),
        key=lambda span: span.start_time or 0,
    )
    kinds = [attributes(span)["chatrelay.call"] for span in calls]
    assert kinds[0] == "open" and kinds[1] == "create" and kinds[-1] == "finish"
    assert "update" in kinds
    assert len(calls) == len(slack.calls_to("chat.appendStream")) + 3
    scopes = {
        attributes(span)["chatrelay.call"]: attributes(span)["chatrelay.scopes"] for span in calls
    }
    assert scopes["open"] == ("slack:assistant.threads.setStatus",)
    assert scopes["create"] == ("slack:chat.startStream",)
    assert scopes["update"] == ("slack:chat.appendStream",)
    assert scopes["finish"] == ("slack:chat.stopStream",)
    for span in calls:
        assert span.kind is SpanKind.CLIENT and "error.type" not in attributes(span)
        assert (span.start_time or 0) >= (root.start_time or 0)
        assert (span.end_time or 0) <= (root.end_time or 0)

    # No token anywhere, and ids only where the root names where the reply went.
    for span in found:
        for key, value in attributes(span).items():
            text = json.dumps(value)
            assert "xoxb" not in text and "xapp" not in text and "sk-test" not in text
            if key not in ("chatrelay.channel", "chatrelay.workspace"):
                assert "C1" not in text and "T1" not in text, (span.name, key, value)

    # The reply's log lines name its trace.
    mine = [json.loads(line) for line in lines.getvalue().splitlines()]
    mine = [entry for entry in mine if entry.get("reply_id")]
    assert mine and {entry["trace_id"] for entry in mine} == {f"{trace_id:032x}"}
    assert mine[-1]["outcome"] == "done"


# --------------------------------------------------------------------------- the model client


async def test_each_model_request_is_a_span_the_failed_ones_with_their_error(
    llm_server: FakeLLMServer,
) -> None:
    """A 500 from the primary, then its fallback answers: two request spans."""
    llm_server.enqueue(
        error_response(500, "boom"),
        FakeResponse(chunks=split_events(chat_stream(["ok"], usage=(3, 1), finish="length"))),
    )
    client = LLMClient(
        [Provider(llm_server.base_url, "primary"), Provider(llm_server.base_url, "backup")],
        timeouts=Timeouts(connect=2, first_token=5, idle=5),
        retry=RetryPolicy(max_retries=0),
    )
    traces, exporter = traced()
    try:
        with traces.reply(platform="discord", workspace="G1", channel="7", reply_id="r") as trace:
            result = await Reply(RecordingSink(MonotonicClock())).run(
                client.stream([], extra=None, trace=trace)
            )
            trace.outcome = result.outcome.state
    finally:
        await client.aclose()
    assert result.text == "ok"
    found = exporter.get_finished_spans()
    [failed] = named(found, "chat primary")
    [answered] = named(found, "chat backup")
    assert attributes(failed)["error.type"] == "http"
    assert attributes(failed)["http.response.status_code"] == 500
    assert failed.status.status_code is StatusCode.ERROR
    assert (attributes(failed)["chatrelay.attempt"], attributes(answered)["chatrelay.attempt"]) == (
        1,
        2,
    )
    assert attributes(answered)["gen_ai.response.finish_reasons"] == ("length",)
    assert attributes(answered)["gen_ai.usage.output_tokens"] == 1
    assert "error.type" not in attributes(answered)


async def test_a_request_override_of_the_model_is_the_requested_model(
    llm_server: FakeLLMServer, llm: LLMClient
) -> None:
    llm_server.enqueue(FakeResponse(chunks=split_events(chat_stream(["ok"]))))
    traces, exporter = traced()
    with traces.reply(platform="discord", workspace="G1", channel="7", reply_id="r") as trace:
        await Reply(RecordingSink(MonotonicClock())).run(
            llm.stream([], extra={"model": "chosen"}, trace=trace)
        )
    [span] = named(exporter.get_finished_spans(), "chat chosen")
    assert attributes(span)["gen_ai.request.model"] == "chosen"


async def test_a_reply_stopped_mid_stream_ends_its_request_span(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(FakeResponse(chunks=split_events(chat_stream(["a"] * 50)), chunk_delay=0.05))
    client = llm_server.client()
    traces, exporter = traced()
    try:
        with traces.reply(platform="slack", workspace="T1", channel="C1", reply_id="r") as trace:
            reply = Reply(RecordingSink(MonotonicClock()))
            running = asyncio.create_task(reply.run(client.stream([], trace=trace)))
            await asyncio.sleep(0.3)
            reply.stop()
            result = await running
            trace.outcome = result.outcome.state
    finally:
        await client.aclose()
    [span] = named(exporter.get_finished_spans(), "chat test-model")
    assert span.end_time is not None and "gen_ai.response.finish_reasons" not in attributes(span)
    [root] = named(exporter.get_finished_spans(), tracing.REPLY_SPAN)
    assert attributes(root)["chatrelay.outcome"] == "stopped"


# --------------------------------------------------------------------------- the engine's calls


async def test_budget_waits_and_failed_calls_are_spans() -> None:
    """A scope that allows one call per 0.15 s makes the later calls wait; a 429
    and an error are spans with their error, and waits only where there was one."""

    async def events() -> AsyncIterator[object]:
        from core.llm.events import Finish, TextDelta

        for piece in ["one ", "two ", "three ", "four"]:
            yield TextDelta(piece)
            await asyncio.sleep(0.05)
        yield Finish("stop")

    def fail(call: object, number: int) -> Exception | None:
        return {1: RateLimited(0.01), 2: RuntimeError("hiccup")}.get(number)

    sink = RecordingSink(MonotonicClock(), scope="discord:channel:4242", fail=fail)
    budget = LocalBudget(LimitTable({"discord:channel:*": Limit(1, 0.15)}))
    traces, exporter = traced()
    with traces.reply(platform="discord", workspace="G1", channel="4242", reply_id="r") as trace:
        reply = Reply(
            sink, budget=budget, pacing=Pacing(min_interval=0.0), observer=trace.observer(None)
        )
        result = await reply.run(events())
        trace.outcome = result.outcome.state
    assert result.text == "one two three four" and result.delivered
    found = exporter.get_finished_spans()
    calls = [span for span in found if span.name.startswith("chatrelay.platform.")]
    errors = [attributes(span).get("error.type") for span in calls]
    assert errors.count("rate_limited") == 1 and errors.count("RuntimeError") == 1
    assert len(calls) == sink.attempts
    for span in calls:
        assert attributes(span)["chatrelay.scopes"] == ("discord:channel",)  # not 4242
        if "error.type" in attributes(span):
            assert span.status.status_code is StatusCode.ERROR
    waits = named(found, tracing.BUDGET_SPAN)
    assert waits  # one call per 0.15 s: later calls waited
    for span in waits:
        assert attributes(span)["chatrelay.scope"] == "discord:channel"
        assert attributes(span)["chatrelay.waited_s"] > 0
        assert (span.end_time or 0) - (span.start_time or 0) > 0
    # A call replaced while it waited passes its slot on: its wait is no call's.
    waited = sum(attributes(span)["chatrelay.budget_wait_s"] for span in calls)
    assert 0 < waited <= sum(attributes(s)["chatrelay.waited_s"] for s in waits) + 1e-9
    [root] = named(found, tracing.REPLY_SPAN)
    [limited] = [event for event in root.events if event.name == "chatrelay.rate_limited"]
    assert dict(limited.attributes or {}) == {
        "chatrelay.scope": "discord:channel",
        "chatrelay.retry_after_s": 0.01,
    }


def test_the_tracing_observer_passes_everything_on_to_the_metrics_one() -> None:
    seen: list[tuple[str, object]] = []

    class Recorder:
        def first_token(self, seconds: float) -> None:
            seen.append(("first_token", seconds))

        def first_visible(self, seconds: float) -> None:
            seen.append(("first_visible", seconds))

        def visible(self, staleness: float) -> None:
            seen.append(("visible", staleness))

        def platform_call(self, call: object, seconds: float, budget_wait: float) -> None:
            seen.append(("platform_call", budget_wait))

        def rate_limited(self, scope: str, retry_after: float) -> None:
            seen.append(("rate_limited", scope))

    traces, _ = traced()
    with traces.reply(platform="slack", workspace="T1", channel="C1", reply_id="r") as trace:
        observer = trace.observer(Recorder())
        observer.first_token(0.1)
        observer.first_visible(0.2)
        observer.visible(0.3)
        from core.reply.sink import SinkCall

        observer.platform_call(SinkCall.UPDATE, 0.01, 0.5)
        observer.rate_limited("slack:T1:chat.update", 1.0)
        trace.outcome = "done"
    assert seen == [
        ("first_token", 0.1),
        ("first_visible", 0.2),
        ("visible", 0.3),
        ("platform_call", 0.5),
        ("rate_limited", "slack:T1:chat.update"),  # the metrics keep their own labels
    ]


def test_a_reply_trace_starts_when_its_platform_event_arrived() -> None:
    """The adapters note an event's arrival (``IntakeLog.received``); a request
    built while handling it carries that time, and its root span starts there,
    so time spent before the responder (dedupe, locks, a busy loop) shows."""
    intake = IntakeLog()
    arrived_before = time.time()
    intake.received("Ev1")
    request = ReplyRequest(
        platform="slack",
        conversation=ConversationKey("slack", "T1", "C1", "1.0"),
        author="U1",
        text="hi",
        channel="C1",
        system_prompt="",
    )
    assert request.received_at is not None and arrived_before <= request.received_at
    traces, exporter = traced()
    with traces.reply(
        platform="slack", workspace="T1", channel="C1", reply_id="r", started=request.received_at
    ) as trace:
        trace.outcome = "done"
    [root] = exporter.get_finished_spans()
    assert root.start_time == int(request.received_at * 1e9)
    started = time.time() - 5.0
    with traces.reply(
        platform="slack", workspace="T1", channel="C1", reply_id="r2", started=started
    ) as trace:
        trace.outcome = "done"
    later = exporter.get_finished_spans()[-1]
    assert later.end_time is not None and later.start_time is not None
    assert later.end_time - later.start_time >= 5 * 10**9


async def test_an_exception_leaving_a_reply_is_recorded_on_its_root() -> None:
    traces, exporter = traced()
    with (
        pytest.raises(ConnectionError),
        traces.reply(platform="slack", workspace="T1", channel="C1", reply_id="r"),
    ):
        raise ConnectionError("redis down")
    [root] = exporter.get_finished_spans()
    assert attributes(root)["chatrelay.outcome"] == "error"
    assert attributes(root)["error.type"] == "ConnectionError"
    assert root.status.status_code is StatusCode.ERROR


async def test_a_cancelled_reply_ends_its_root_as_cancelled_not_as_an_error() -> None:
    traces, exporter = traced()
    entered = asyncio.Event()

    async def reply() -> None:
        with traces.reply(platform="slack", workspace="T1", channel="C1", reply_id="r"):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(reply())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [root] = exporter.get_finished_spans()
    assert attributes(root)["chatrelay.outcome"] == "cancelled"
    assert root.status.status_code is StatusCode.UNSET and "error.type" not in attributes(root)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, Console"}, ["otlp", "console"]),
    ],
)
def test_tracing_is_on_only_when_the_standard_settings_say_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], exporters: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.TracingSettings().exporters == exporters


def test_traces_go_to_the_endpoints_traces_path() -> None:
    settings = tracing.TracingSettings(
        _env_file=None,  # type: ignore[call-arg]
        otel_exporter_otlp_endpoint="http://collector:4318/",
    )
    assert settings.traces_endpoint == "http://collector:4318/v1/traces"
    settings = tracing.TracingSettings(
        _env_file=None,  # type: ignore[call-arg]
        otel_exporter_otlp_endpoint="http://collector:4318",
        otel_exporter_otlp_traces_endpoint="http://elsewhere/traces",
    )
    assert settings.traces_endpoint == "http://elsewhere/traces"


def test_an_unknown_exporter_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    monkeypatch.setattr(tracing, "_process", tracing._UNSET)
    with pytest.raises(ConfigError, match=r"invalid setting OTEL_TRACES_EXPORTER: .*jaeger"):
        tracing.process_tracing()


# --------------------------------------------------------------------------- real processes

REPLY = """
import asyncio, json, os, sys
if os.environ.get("HIDE_OTEL"):
    sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from core.clock import MonotonicClock
from core.llm.events import Finish, TextDelta, Usage
from core.telemetry.logs import setup_logging
from core.service.responder import ReplyRequest, Responder
from core.state.keys import ConversationKey
from core.state.settings import load_state_settings
from core.state.store import open_state
from tests.fakes.recording_sink import RecordingSink

class Model:
    providers = []
    async def stream(self, messages, extra=None, trace=None):
        yield TextDelta("hello")
        yield Usage(5, 1)
        yield Finish("stop")

async def main():
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"), "text")
    settings = load_state_settings(redis_url=os.environ["REDIS_URL"], redis_prefix=sys.argv[1])
    async with open_state(settings) as state:
        request = ReplyRequest("slack", ConversationKey("slack", "T1", "C1", "1"), "U1", "hi",
                               "C1", "be brief")
        result = await Responder(state, Model()).respond(
            request, lambda reply_id: RecordingSink(MonotonicClock()))
        left = [key async for key in state.redis.scan_iter(sys.argv[1] + "*")]
        if left:
            await state.redis.delete(*left)
    # redis-py loads OpenTelemetry's API and metrics when installed; tracing's
    # own modules (the trace SDK, an exporter) only come with tracing.
    tracing = ("opentelemetry.sdk.trace", "opentelemetry.exporter")
    loaded = sorted(m for m in sys.modules if m.startswith(tracing))
    print(json.dumps({"outcome": result.outcome.state, "otel": loaded}))

asyncio.run(main())
"""


def run_reply(tmp_path: Path, **env: str) -> tuple[dict[str, Any], str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(PYTHONPATH=str(REPO), **env)
    done = subprocess.run(
        [sys.executable, "-c", REPLY, f"chatrelay-test-tracing-{os.getpid()}:"],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


class Collector:
    """An OTLP/HTTP endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        received: list[tuple[str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                received.append((self.path, self.rfile.read(length)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Collector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def test_tracing_off_imports_nothing_of_opentelemetrys_tracing(tmp_path: Path) -> None:
    outcome, _ = run_reply(tmp_path)
    assert outcome == {"outcome": "done", "otel": []}
    outcome, _ = run_reply(tmp_path, OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_ENDPOINT="x")
    assert outcome == {"outcome": "done", "otel": []}


def test_the_otlp_endpoint_receives_the_replys_trace(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    with Collector() as collector:
        outcome, stderr = run_reply(
            tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint, OTEL_SERVICE_NAME="relay-1"
        )
    assert outcome["outcome"] == "done" and outcome["otel"]
    assert "tracing on: otlp to " + collector.endpoint + "/v1/traces" in stderr
    assert [path for path, _ in collector.received] == ["/v1/traces"]
    request = ExportTraceServiceRequest()
    request.ParseFromString(collector.received[0][1])
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "relay-1"
    names = [span.name for scope in resource.scope_spans for span in scope.spans]
    assert tracing.REPLY_SPAN in names and "chatrelay.platform.finish" in names


def test_tracing_configured_without_the_packages_is_one_line_at_start(tmp_path: Path) -> None:
    outcome, stderr = run_reply(
        tmp_path, HIDE_OTEL="1", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"
    )
    assert outcome == {"outcome": "done", "otel": []}
    [line] = [line for line in stderr.splitlines() if "OpenTelemetry" in line]
    assert line.startswith("WARNING core.telemetry.tracing: tracing is configured")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in line and "chatrelay[otel]" in line
    assert "Traceback" not in stderr


@pytest.mark.parametrize("argv", [["--help"], ["ask", "--help"], ["ask", "hi"]])
def test_ask_and_help_import_nothing_of_opentelemetry_even_when_configured(
    tmp_path: Path, argv: list[str]
) -> None:
    """``chatrelay ask`` never traces: it runs no responder."""
    record = f"{tmp_path / 'modules.json'}|{json.dumps(['opentelemetry'])}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "OTEL_"))}
    env.update(
        PYTHONPATH=str(REPO),
        STATE_DIR=str(tmp_path / "state"),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, record, "", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "modules.json").read_text()) == []
