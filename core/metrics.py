"""Prometheus metrics in the text exposition format, with no extra dependency.

The handful of metric kinds chatrelay needs (counters, gauges, histograms with
labels) fit in one small module, which keeps the dependency list to the
design card. ``ReplyMetrics`` is the ``ReplyObserver`` the engine reports to;
``Registry.render()`` is what ``/metrics`` serves.
"""

from __future__ import annotations

import abc
import bisect
import math
import threading
from collections.abc import Sequence

from core.sink import SinkCall

LabelValues = tuple[str, ...]

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
COUNT_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric(abc.ABC):
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, values: Sequence[str]) -> LabelValues:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")
        return tuple(str(v) for v in values)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    @abc.abstractmethod
    def render(self) -> list[str]:
        """The metric's exposition lines, header included."""


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        lines = self.header()
        for key, value in sorted(self._values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, key)} {_number(value)}")
        return lines


class Gauge(Counter):
    kind = "gauge"

    def dec(self, *labels: str, amount: float = 1.0) -> None:
        self.inc(*labels, amount=-amount)

    def set(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = ()
    ) -> None:
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets or SECONDS_BUCKETS))
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        slot = bisect.bisect_left(self.buckets, value)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[slot] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, *labels: str) -> int:
        return sum(self._counts.get(self._key(labels), ()))

    def render(self) -> list[str]:
        lines = self.header()
        for key, counts in sorted(self._counts.items()):
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {running}")
            lines.append(
                f"{self.name}_sum{_labels(self.label_names, key)} {_number(self._sums[key])}"
            )
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {running}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class ChatrelayMetrics:
    """Every metric chatrelay exports, in one registry."""

    def __init__(self) -> None:
        self.registry = Registry()
        m = self.registry.add
        self.replies_started = Counter(
            "chatrelay_replies_started_total", "Replies started.", ["platform"]
        )
        self.replies_ended = Counter(
            "chatrelay_replies_total", "Replies ended, by outcome.", ["platform", "outcome"]
        )
        self.active = Gauge("chatrelay_active_streams", "Replies streaming now.", ["platform"])
        self.first_token = Histogram(
            "chatrelay_time_to_first_token_seconds",
            "Reply start to the model's first token.",
            ["platform"],
        )
        self.first_visible = Histogram(
            "chatrelay_time_to_first_visible_seconds",
            "Reply start to the first platform call showing output.",
            ["platform"],
        )
        self.staleness = Histogram(
            "chatrelay_staleness_seconds",
            "Token arrival to a completed platform call showing it.",
            ["platform"],
        )
        self.edits = Histogram(
            "chatrelay_edits_per_reply",
            "Platform calls showing text, per reply.",
            ["platform"],
            buckets=COUNT_BUCKETS,
        )
        self.rate_limited = Counter(
            "chatrelay_rate_limited_total", "429 answers from a platform, by scope.", ["scope"]
        )
        self.budget_wait = Histogram(
            "chatrelay_budget_wait_seconds",
            "Time a platform call waited for its budget.",
            ["platform", "call"],
        )
        self.tokens = Counter(
            "chatrelay_tokens_total",
            "Model tokens, by model and direction.",
            ["model", "direction"],
        )
        self.inflight = Counter(
            "chatrelay_inflight_events_total",
            "What became of replies another process (or a later try) had to finish: "
            "deferred (a final state the platform refused, left for a retry), retry, "
            "finalised, handed_over (never showed text: answered anew), dropped.",
            ["platform", "event"],
        )
        self.discord_invalid = Counter(
            "chatrelay_discord_invalid_requests_total",
            "Discord answers that count toward its invalid-request limit (401, 403, "
            "429 other than shared-scope ones), by status.",
            ["status"],
        )
        self.discord_invalid_window = Gauge(
            "chatrelay_discord_invalid_requests_window",
            "Invalid Discord requests of every replica in the last 10 minutes "
            "(Discord bans the IP at 10,000).",
        )
        self.discord_slowdown = Gauge(
            "chatrelay_discord_slowdown_level",
            "Discord invalid-request guard: 0 normal, 1 slowed (limits halved), "
            "2 updates paused (first and final frames only).",
        )
        for metric in (
            self.discord_invalid,
            self.discord_invalid_window,
            self.discord_slowdown,
            self.inflight,
            self.replies_started,
            self.replies_ended,
            self.active,
            self.first_token,
            self.first_visible,
            self.staleness,
            self.edits,
            self.rate_limited,
            self.budget_wait,
            self.tokens,
        ):
            m(metric)

    def inflight_event(self, event: str, platform: str) -> None:
        """For ``InflightRegistry.events``."""
        self.inflight.inc(platform, event)

    def observer(self, platform: str) -> ReplyMetrics:
        return ReplyMetrics(self, platform)


class ReplyMetrics:
    """A ``core.observe.ReplyObserver`` feeding ``ChatrelayMetrics`` for one platform."""

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
        self._m.rate_limited.inc(scope)
