"""Metrics exposition and log hygiene."""

from __future__ import annotations

import json
import logging

import pytest

from core.reply.sink import SinkCall
from core.telemetry import logs
from core.telemetry.metrics import ChatrelayMetrics, Counter, Histogram, MetricsRegistry


def test_prometheus_text_format() -> None:
    registry = MetricsRegistry()
    counter = Counter("demo_total", "A counter.", ["kind"], registry=registry)
    histogram = Histogram(
        "demo_seconds", "A histogram.", ["kind"], registry=registry, buckets=(0.5, 1.0)
    )
    counter.inc("a")
    counter.inc("a", amount=2)
    counter.inc('we"ird')
    for value in (0.2, 0.7, 3.0):
        histogram.observe(value, "a")
    text = registry.render()
    assert "# TYPE demo_total counter" in text
    assert 'demo_total{kind="a"} 3.0' in text
    assert 'demo_total{kind="we\\"ird"} 1.0' in text
    assert 'demo_seconds_bucket{kind="a",le="0.5"} 1.0' in text
    assert 'demo_seconds_bucket{kind="a",le="1.0"} 2.0' in text
    assert 'demo_seconds_bucket{kind="a",le="+Inf"} 3.0' in text
    assert 'demo_seconds_count{kind="a"} 3.0' in text
    assert 'demo_seconds_sum{kind="a"} 3.9' in text
    assert counter.value("a") == 3 and histogram.count("a") == 3
    with pytest.raises(ValueError):
        counter.inc()  # wrong label count
    with pytest.raises(ValueError):
        Counter("demo_total", "again", registry=registry)


def test_reply_observer_feeds_the_metrics() -> None:
    metrics = ChatrelayMetrics()
    observer = metrics.observer("slack")
    observer.first_token(0.3)
    observer.visible(1.2)
    observer.platform_call(SinkCall.UPDATE, 0.1, 0.5)
    observer.rate_limited("slack:T1:chat.update", 3.0)
    assert metrics.first_token.count("slack") == 1
    assert metrics.staleness.count("slack") == 1
    assert metrics.budget_wait.count("slack", "update") == 1
    assert metrics.rate_limited.value("slack:chat.update") == 1  # the scope's kind: no team


@pytest.mark.parametrize(
    "secret",
    [
        "xoxb-1234-5678-abcdefgh",
        "xapp-1-A111-222-abc",
        "sk-proj-abcdefghijklmnop",
        "Bearer abcdefghijklmnop",
        "MTA4OTY0NTQ3NzgxNTUxMjM0NQ.GabcDE.abcdefghijklmnopqrstuvwxyz0123",
    ],
)
def test_tokens_never_reach_the_log(secret: str, caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "calling with %s", (secret,), None)
    logs.RedactingFilter().filter(record)
    assert secret not in record.getMessage()
    assert "[redacted]" in record.getMessage()


def test_json_lines_carry_the_reply_id() -> None:
    token = logs.reply_id.set("r-123")
    try:
        record = logging.LogRecord(
            "core.reply.engine", logging.WARNING, __file__, 1, "slow %d", (3,), None
        )
        logs.ReplyIdFilter().filter(record)
        entry = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.reply_id.reset(token)
    assert entry["reply_id"] == "r-123"
    assert entry["message"] == "slow 3" and entry["level"] == "warning"


def test_inflight_events_are_counted_by_platform_and_event() -> None:
    metrics = ChatrelayMetrics()
    metrics.inflight_event("deferred", "slack")
    metrics.inflight_event("deferred", "slack")
    metrics.inflight_event("handed_over", "discord")
    text = metrics.registry.render()  # labels in name order, as prometheus_client writes them
    assert 'chatrelay_inflight_events_total{event="deferred",platform="slack"} 2.0' in text
    assert metrics.inflight.value("discord", "handed_over") == 1
