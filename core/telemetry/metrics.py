"""chatrelay's Prometheus metrics, through ``prometheus_client``.

Every metric lives in one ``MetricsRegistry`` (a ``CollectorRegistry``) per
``ChatrelayMetrics``, never in the library's global default registry, so a test
(or two services in one process) gets a fresh set. The registry also carries
the library's process (``process_*``), platform (``python_info``) and garbage
collector (``python_gc_*``) collectors and ``chatrelay_build_info``.
``MetricsRegistry.exposition`` answers in the Prometheus text format or in
OpenMetrics, whichever the scraper asks for; ``bots.ops.metrics_app`` serves it
on ``METRICS_PORT``. docs/metrics.md lists every metric and label.

**Every label is bounded.** A label value that could carry an id (a channel, a
user, an interaction token's digest) or free text (an error message) makes one
series per value, forever: Prometheus keeps each, and the scrape grows until it
fails. So budget scopes are reduced to their kind (``scope_kind``), errors to
a vocabulary (Slack's error codes, HTTP statuses, the LLM client's error
kinds), and as a safety net each label of each metric takes at most
``MAX_LABEL_VALUES`` distinct values, after which new ones count as ``other``.

The metric objects keep the small call surface the rest of the code uses
(``counter.inc(*labels, amount=)``, ``histogram.observe(value, *labels)``), so
callers pass label values positionally and never import ``prometheus_client``:
only ``chatrelay run`` pays for importing it, never ``chatrelay ask``.
"""

from __future__ import annotations

import platform as _platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import Metric

from core.reply.sink import SinkCall

# ``_created`` samples double every counter's and histogram's series for a
# timestamp no dashboard here reads.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)

MAX_LABEL_VALUES = 100
"""Distinct values one label of one metric may take; later ones count as ``OTHER``."""
OTHER = "other"

_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


def scope_kind(scope: str) -> str:
    """A budget scope without its ids, for a label.

    ``slack:T123:chat.postMessage:C1`` -> ``slack:chat.postMessage`` (the team
    and the channel dropped), ``slack:T123:chat.update`` -> ``slack:chat.update``,
    ``discord:channel:123`` -> ``discord:channel``, ``discord:interaction:<digest>``
    -> ``discord:interaction``, ``discord:global`` -> ``discord:global``; anything
    else -> ``other``."""
    parts = scope.split(":")
    if parts[0] == "slack" and len(parts) >= 3 and _METHOD.match(parts[2]):
        return f"slack:{parts[2]}"
    if parts[0] == "discord" and len(parts) >= 2 and _KIND.match(parts[1]):
        return f"discord:{parts[1]}"
    return OTHER


class _Family:
    """One metric with its label names, bounding each label's values."""

    def __init__(
        self,
        metric: Any,
        registry: CollectorRegistry,
        name: str,
        labels: Sequence[str],
        cap: int = MAX_LABEL_VALUES,
    ) -> None:
        self.name = name
        self.label_names = tuple(labels)
        self._metric = metric
        self._registry = registry
        self._cap = cap
        self._seen: tuple[set[str], ...] = tuple(set() for _ in self.label_names)
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def _bounded(self, values: Sequence[str]) -> tuple[str, ...]:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(values)}")
        bounded = []
        for seen, value in zip(self._seen, values, strict=True):
            value = str(value)
            if value not in seen:
                if len(seen) >= self._cap:
                    value = OTHER
                else:
                    seen.add(value)
            bounded.append(value)
        return tuple(bounded)

    def _child(self, values: tuple[str, ...]) -> Any:
        child = self._children.get(values)
        if child is not None:
            return child
        if not self.label_names:
            if values:
                raise ValueError(f"{self.name} takes no labels, got {values}")
            return self._metric
        with self._lock:
            bounded = self._bounded(values)
            child = self._metric.labels(*bounded)
            if bounded == values:  # only values that got through: the cache stays bounded
                self._children[values] = child
        return child

    def _sample(self, suffix: str, values: tuple[str, ...]) -> float:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")
        labels = dict(zip(self.label_names, (str(v) for v in values), strict=True))
        found = self._registry.get_sample_value(self.name + suffix, labels)
        return found or 0.0


class Counter(_Family):
    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), *, registry: CollectorRegistry
    ) -> None:
        base = name.removesuffix("_total")
        metric = prometheus_client.Counter(base, help, tuple(labels), registry=registry)
        super().__init__(metric, registry, base, labels)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self._child(labels).inc(amount)

    def value(self, *labels: str) -> float:
        return self._sample("_total", labels)


class Gauge(_Family):
    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), *, registry: CollectorRegistry
    ) -> None:
        metric = prometheus_client.Gauge(name, help, tuple(labels), registry=registry)
        super().__init__(metric, registry, name, labels)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self._child(labels).inc(amount)

    def dec(self, *labels: str, amount: float = 1.0) -> None:
        self._child(labels).dec(amount)

    def set(self, value: float, *labels: str) -> None:
        self._child(labels).set(value)

    def set_function(self, read: Callable[[], float]) -> None:
        """Read the value from ``read`` at each scrape (a gauge without labels)."""
        self._child(()).set_function(read)

    def value(self, *labels: str) -> float:
        return self._sample("", labels)


class Histogram(_Family):
    def __init__(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
        buckets: Sequence[float] = SECONDS_BUCKETS,
    ) -> None:
        metric = prometheus_client.Histogram(
            name, help, tuple(labels), registry=registry, buckets=tuple(buckets)
        )
        super().__init__(metric, registry, name, labels)

    def observe(self, value: float, *labels: str) -> None:
        self._child(labels).observe(value)

    def count(self, *labels: str) -> int:
        return int(self._sample("_count", labels))


class MetricsRegistry(CollectorRegistry):
    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The body and its content type for a scrape's ``Accept`` header:
        OpenMetrics when it asks for ``application/openmetrics-text``, else the
        Prometheus text format 0.0.4."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self), content_type

    def render(self) -> str:
        """The Prometheus text format, for tests and logs."""
        return generate_latest(self).decode()


class _DegradedTime:
    """``chatrelay_redis_degraded`` and ``chatrelay_redis_degraded_seconds_total``,
    worked out at each scrape so an outage still going on counts up to now."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None
        self._total = 0.0
        self._lock = threading.Lock()

    def set(self, degraded: bool) -> None:
        with self._lock:
            now = self._clock()
            if degraded and self._since is None:
                self._since = now
            elif not degraded and self._since is not None:
                self._total += now - self._since
                self._since = None

    def seconds(self) -> float:
        with self._lock:
            ongoing = self._clock() - self._since if self._since is not None else 0.0
            return self._total + ongoing

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "chatrelay_redis_degraded",
            "1 while Redis is unreachable and rate budgets are per-process, else 0.",
            value=1.0 if self._since is not None else 0.0,
        )
        yield CounterMetricFamily(
            "chatrelay_redis_degraded_seconds",
            "Seconds spent with Redis unreachable (rate budgets per-process).",
            value=self.seconds(),
        )

    def describe(self) -> Iterable[Metric]:
        return self.collect()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatrelay")
    except PackageNotFoundError:
        return "unknown"


class ChatrelayMetrics:
    """Every metric chatrelay exports, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = MetricsRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("chatrelay_build", "The running chatrelay's version.", registry=r).info(
            {"version": _version(), "python_version": _platform.python_version()}
        )

        # Replies
        self.replies_started = Counter(
            "chatrelay_replies_started_total", "Replies started.", ["platform"], registry=r
        )
        self.replies_ended = Counter(
            "chatrelay_replies_total",
            "Replies ended, by outcome (done, stopped, failed, ...).",
            ["platform", "outcome"],
            registry=r,
        )
        self.active = Gauge(
            "chatrelay_active_streams", "Replies streaming now.", ["platform"], registry=r
        )
        self.first_token = Histogram(
            "chatrelay_time_to_first_token_seconds",
            "Reply start to the model's first token.",
            ["platform"],
            registry=r,
        )
        self.first_visible = Histogram(
            "chatrelay_time_to_first_visible_seconds",
            "Reply start to the first platform call showing output.",
            ["platform"],
            registry=r,
        )
        self.staleness = Histogram(
            "chatrelay_staleness_seconds",
            "Token arrival to a completed platform call showing it.",
            ["platform"],
            registry=r,
        )
        self.edits = Histogram(
            "chatrelay_edits_per_reply",
            "Platform calls showing text, per reply.",
            ["platform"],
            registry=r,
            buckets=COUNT_BUCKETS,
        )
        self.tokens = Counter(
            "chatrelay_tokens_total",
            "Model tokens, by model and direction (in, out).",
            ["model", "direction"],
            registry=r,
        )

        # Platform calls
        self.rate_limited = Counter(
            "chatrelay_rate_limited_total",
            "429 answers from a platform despite the budget, by the kind of budget scope "
            "(slack:chat.update, discord:channel, ...).",
            ["scope"],
            registry=r,
        )
        self.budget_wait = Histogram(
            "chatrelay_budget_wait_seconds",
            "Time a platform call waited for its budget.",
            ["platform", "call"],
            registry=r,
        )
        self.api_errors = Counter(
            "chatrelay_platform_api_errors_total",
            "Failed platform API calls, by method (a Slack method, a Discord route) and "
            "error (a Slack error code, an HTTP status, unreachable; other for the rest).",
            ["platform", "method", "error"],
            registry=r,
        )

        # Messages received
        self.messages_received = Counter(
            "chatrelay_messages_received_total",
            "Platform messages a handler started on.",
            ["platform"],
            registry=r,
        )
        self.messages = Counter(
            "chatrelay_messages_total",
            "Platform messages received, by what became of them (ignored, deduplicated, "
            "answered, handed_over, failed).",
            ["platform", "outcome"],
            registry=r,
        )

        # The model
        self.llm_requests = Counter(
            "chatrelay_llm_requests_total",
            "Requests sent to a model provider (every try, retries and fallbacks included).",
            ["provider"],
            registry=r,
        )
        self.llm_errors = Counter(
            "chatrelay_llm_errors_total",
            "Model requests that failed, by provider, reason and stage (start: before the "
            "first token, retried or passed to a fallback; stream: after it, the reply fails).",
            ["provider", "reason", "stage"],
            registry=r,
        )
        self.llm_fallbacks = Counter(
            "chatrelay_llm_fallbacks_total",
            "Providers given up on for the next one of LLM_FALLBACKS, by the reason of "
            "their last failure.",
            ["provider", "reason"],
            registry=r,
        )

        # Shared state
        self.redis_errors = Counter(
            "chatrelay_redis_errors_total",
            "Redis calls of the rate budget that failed or timed out, by operation "
            "(acquire, try_acquire, block, probe).",
            ["operation"],
            registry=r,
        )
        self._degraded = _DegradedTime()
        r.register(self._degraded)
        self.inflight = Counter(
            "chatrelay_inflight_events_total",
            "What became of replies another process (or a later try) had to finish: "
            "deferred (a final state the platform refused, left for a retry), retry "
            "(finalising failed again), finalised (an orphan or a deferred final shown), "
            "handed_over (never showed text: answered anew), dropped (given up on).",
            ["platform", "event"],
            registry=r,
        )
        self.finals_waiting = Gauge(
            "chatrelay_finals_waiting",
            "Replies of every replica whose final state a finaliser tried to show and "
            "could not yet (a platform outage); retried with backoff until "
            "INFLIGHT_FINAL_RETRY_FOR. Fleet-wide: every replica reports the same count.",
            ["platform"],
            registry=r,
        )
        self.inflight_unsettled = Gauge(
            "chatrelay_inflight_unsettled",
            "Finished replies whose in-flight records Redis has not let this process forget yet.",
            registry=r,
        )

        # Discord's invalid-request guard
        self.discord_invalid = Counter(
            "chatrelay_discord_invalid_requests_total",
            "Discord answers that count toward its invalid-request limit (401, 403, "
            "429 other than shared-scope ones), by status.",
            ["status"],
            registry=r,
        )
        self.discord_invalid_window = Gauge(
            "chatrelay_discord_invalid_requests_window",
            "Invalid Discord requests of every replica in the last 10 minutes "
            "(Discord bans the IP at 10,000).",
            registry=r,
        )
        self.discord_slowdown = Gauge(
            "chatrelay_discord_slowdown_level",
            "Discord invalid-request guard: 0 normal, 1 slowed (limits halved), "
            "2 updates paused (first and final frames only).",
            registry=r,
        )
        self.llm = LLMMetrics(self)

    def finals_waiting_now(self, platform: str, count: int) -> None:
        """For ``InflightRegistry.finals_waiting``."""
        self.finals_waiting.set(count, platform)

    def inflight_event(self, event: str, platform: str) -> None:
        """For ``InflightRegistry.events``."""
        self.inflight.inc(platform, event)

    def redis_error(self, operation: str) -> None:
        """For ``RedisBudget.on_redis_error``."""
        self.redis_errors.inc(operation)

    def redis_degraded(self, degraded: bool) -> None:
        """For ``RedisBudget.on_degraded``."""
        self._degraded.set(degraded)

    def degraded_seconds(self) -> float:
        return self._degraded.seconds()

    def slack_api_error(self, method: str, error: str) -> None:
        """For ``SafeWebClient.on_error``."""
        self.api_errors.inc("slack", method, error)

    def discord_api_error(self, route: str, error: str) -> None:
        """For ``RateLimitLearner.on_error``."""
        self.api_errors.inc("discord", route, error)

    def observer(self, platform: str) -> ReplyMetrics:
        return ReplyMetrics(self, platform)


class LLMMetrics:
    """An ``observe.LLMObserver`` feeding ``ChatrelayMetrics`` (``LLMClient.observer``)."""

    def __init__(self, metrics: ChatrelayMetrics) -> None:
        self._m = metrics

    def request(self, provider: str) -> None:
        self._m.llm_requests.inc(provider)

    def error(self, provider: str, reason: str, started: bool) -> None:
        self._m.llm_errors.inc(provider, reason, "stream" if started else "start")

    def fallback(self, provider: str, reason: str) -> None:
        self._m.llm_fallbacks.inc(provider, reason)


class ReplyMetrics:
    """A ``core.reply.observe.ReplyObserver`` feeding ``ChatrelayMetrics`` for one platform."""

    def __init__(self, metrics: ChatrelayMetrics, platform: str) -> None:
        self._m = metrics
        self._platform = platform

    def first_token(self, seconds: float) -> None:
        self._m.first_token.observe(seconds, self._platform)

    def first_visible(self, seconds: float) -> None:
        self._m.first_visible.observe(seconds, self._platform)

    def visible(self, staleness: float) -> None:
        self._m.staleness.observe(staleness, self._platform)

    def platform_call(self, call: SinkCall, seconds: float, budget_wait: float) -> None:
        self._m.budget_wait.observe(budget_wait, self._platform, call.value)

    def rate_limited(self, scope: str, retry_after: float) -> None:
        self._m.rate_limited.inc(scope_kind(scope))
