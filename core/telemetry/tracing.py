"""OpenTelemetry traces of replies: off unless configured, then one trace per reply.

Tracing follows OpenTelemetry's own settings (``TracingSettings``): it is on
when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or an exporter is named
(``OTEL_TRACES_EXPORTER=otlp`` or ``console``), and off with
``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``. Off, nothing of
OpenTelemetry is imported and a reply pays one ``if`` per stage; on, the
spans are made per reply, per model request and per platform call, never per
chunk. The packages are an extra (``pip install 'chatrelay[otel]'``): when
tracing is configured without them, one line says so at start.

A reply's trace (docs/logs.md lists every span and attribute)::

    chatrelay.reply                      the root: platform, workspace, channel,
    │                                    reply id, outcome
    ├── chat {model}                     each model request (GenAI semantic
    │                                    conventions: model, tokens, finish reason)
    ├── chatrelay.budget_wait            a platform call waiting for its budget
    └── chatrelay.platform.{call}        each platform call: its kind and its
                                         budget scopes' kinds

Scopes are named by kind only, as the metrics name them
(``core.telemetry.metrics.scope_kind``: ``slack:chat.update``, ``discord:channel``):
their ids (a channel, a digest of an interaction token) stay out of span
attributes, as the root's own ``chatrelay.channel`` is the one place the
channel is named.

The model request's span is made by ``core.llm.client`` through its small
``ModelTrace`` protocol, and the platform calls' by the engine through
``core.reply.observe.CallObserver``: neither knows of OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.config import read_settings
from core.llm.events import Event, Finish, StreamError, Usage
from core.llm.provider import Provider
from core.reply.observe import CallObserver, ReplyObserver
from core.reply.sink import SinkCall
from core.telemetry.logs import redact, register_secrets
from core.telemetry.metrics import scope_kind

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console", "none")
INSTRUMENTATION = "chatrelay"

REPLY_SPAN = "chatrelay.reply"
BUDGET_SPAN = "chatrelay.budget_wait"
CALL_SPAN = "chatrelay.platform.{call}"


class TracingSettings(BaseSettings):
    """OpenTelemetry's standard variables that chatrelay reads itself (also from
    ``.env``). The SDK reads the others from the environment, as usual:
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
    ``OTEL_EXPORTER_OTLP_TIMEOUT``, ``OTEL_EXPORTER_OTLP_CERTIFICATE``..."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    otel_sdk_disabled: bool = False
    """``true``: no tracing, whatever else is set."""
    otel_traces_exporter: str = ""
    """``otlp``, ``console`` (spans printed to stdout), both (``otlp,console``) or
    ``none``. Empty: ``otlp`` when an endpoint is set, else no tracing."""
    otel_exporter_otlp_endpoint: str | None = None
    """The collector's base URL (``http://collector:4318``); traces go to
    ``{endpoint}/v1/traces``."""
    otel_exporter_otlp_traces_endpoint: str | None = None
    """The full URL for traces, when it isn't ``{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces``."""
    otel_exporter_otlp_protocol: str = "http/protobuf"
    """``http/protobuf`` (installed with the ``otel`` extra) or ``grpc`` (needs
    ``opentelemetry-exporter-otlp-proto-grpc``)."""
    otel_exporter_otlp_headers: SecretStr | None = None
    """``key=value,key2=value2`` sent with every export (a collector's API key)."""
    otel_service_name: str = "chatrelay"

    @field_validator("otel_traces_exporter")
    @classmethod
    def _exporters(cls, value: str) -> str:
        names = _names(value)
        unknown = [name for name in names if name not in EXPORTERS]
        if unknown:
            raise ValueError(f"unknown exporter {unknown[0]!r}: use otlp, console or none")
        return ",".join(names)

    @field_validator("otel_exporter_otlp_protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        value = value.strip().lower() or "http/protobuf"
        if value not in ("http/protobuf", "grpc"):
            raise ValueError("use http/protobuf or grpc")
        return value

    @property
    def exporters(self) -> list[str]:
        """The exporters asked for; empty when tracing is off."""
        if self.otel_sdk_disabled:
            return []
        names = _names(self.otel_traces_exporter)
        if not names:
            endpoint = self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint
            return ["otlp"] if endpoint else []
        return [] if "none" in names else names

    @property
    def traces_endpoint(self) -> str | None:
        """Where OTLP sends spans; None: the exporter's default (localhost)."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        base = self.otel_exporter_otlp_endpoint
        if not base:
            return None
        if self.otel_exporter_otlp_protocol == "grpc":
            return base
        return base.rstrip("/") + "/v1/traces"


def _names(value: str) -> list[str]:
    return [name.strip().lower() for name in value.split(",") if name.strip()]


# -- the process's tracing ------------------------------------------------------

_UNSET: Any = object()
_process: Tracing | None = _UNSET


def process_tracing() -> Tracing | None:
    """The process's tracing, set up from ``TracingSettings`` on the first call
    (a responder's construction, at start); None when off. Raises
    ``ConfigError`` for a bad setting."""
    global _process
    if _process is _UNSET:
        _process = setup(read_settings(TracingSettings))
    return _process


def install(tracing: Tracing | None) -> None:
    """Use ``tracing`` from now on (tests: a provider with an in-memory exporter;
    None: off), instead of what the settings say."""
    global _process
    _process = tracing


def setup(settings: TracingSettings) -> Tracing | None:
    """A ``Tracing`` exporting as ``settings`` say, registered as OpenTelemetry's
    global provider (so other instrumentation joins the reply's trace); None,
    importing nothing, when tracing is off or can't be on."""
    exporters = settings.exporters
    if not exporters:
        return None
    register_secrets(settings)  # the collector's headers never reach a log line
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning(
            "tracing is configured (%s) but the OpenTelemetry packages are not installed "
            "(no module %s): install chatrelay[otel]; replies are not traced",
            _configured_by(settings),
            exc.name,
            extra={"error": "otel_missing"},
        )
        return None
    from importlib.metadata import PackageNotFoundError, version

    attributes = {"service.name": settings.otel_service_name}
    with contextlib.suppress(PackageNotFoundError):
        attributes["service.version"] = version("chatrelay")
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in exporters:
        exporter = _exporter(name, settings)
        if exporter is None:
            return None
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info(
        "tracing on: %s, service %s",
        ", ".join(
            f"{name} to {settings.traces_endpoint or 'localhost'}" if name == "otlp" else name
            for name in exporters
        ),
        settings.otel_service_name,
    )
    return Tracing.of(provider)


def _configured_by(settings: TracingSettings) -> str:
    if settings.otel_traces_exporter:
        return f"OTEL_TRACES_EXPORTER={settings.otel_traces_exporter}"
    if settings.otel_exporter_otlp_traces_endpoint:
        return "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    return "OTEL_EXPORTER_OTLP_ENDPOINT"


def _exporter(name: str, settings: TracingSettings) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    headers = None
    if settings.otel_exporter_otlp_headers is not None:
        from opentelemetry.util.re import parse_env_headers

        headers = parse_env_headers(
            settings.otel_exporter_otlp_headers.get_secret_value(), liberal=True
        )
    if settings.otel_exporter_otlp_protocol == "grpc":
        try:  # not a dependency of ours: imported by name
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError:
            log.warning(
                "tracing is configured with OTEL_EXPORTER_OTLP_PROTOCOL=grpc but "
                "opentelemetry-exporter-otlp-proto-grpc is not installed: replies are not "
                "traced (or use http/protobuf, installed with chatrelay[otel])",
                extra={"error": "otel_missing"},
            )
            return None
        return grpc.OTLPSpanExporter(endpoint=settings.traces_endpoint, headers=headers)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning(
            "tracing is configured but opentelemetry-exporter-otlp-proto-http is not "
            "installed: install chatrelay[otel]; replies are not traced",
            extra={"error": "otel_missing"},
        )
        return None
    return OTLPSpanExporter(endpoint=settings.traces_endpoint, headers=headers)


# -- spans ----------------------------------------------------------------------


def _kinds(scopes: Sequence[str]) -> list[str]:
    kinds: list[str] = []
    for scope in scopes:
        kind = scope_kind(scope)
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def _provider_name(provider: Provider) -> str:
    """GenAI's ``gen_ai.provider.name``: the wire format's owner (an
    OpenAI-compatible gateway speaks ``openai``)."""
    return "anthropic" if provider.api == "anthropic" else "openai"


class Tracing:
    """Makes the traces of replies with one OpenTelemetry tracer."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import context, trace

        self._tracer = tracer
        self._attach = context.attach
        self._detach = context.detach
        self._in_context = trace.set_span_in_context
        self._kinds = trace.SpanKind
        self._status = trace.Status
        self._error = trace.StatusCode.ERROR

    @classmethod
    def of(cls, provider: TracerProvider) -> Tracing:
        return cls(provider.get_tracer(INSTRUMENTATION))

    @contextlib.contextmanager
    def reply(
        self,
        *,
        platform: str,
        workspace: str,
        channel: str,
        reply_id: str,
        started: float | None = None,
    ) -> Iterator[ReplyTrace]:
        """The root span of one reply, current while the reply runs (so spans
        of other instrumentation, an HTTP client's, join its trace), from
        ``started`` (wall-clock seconds: when the platform event arrived) if
        given. Set the ``outcome`` of the ``ReplyTrace`` before leaving; an
        exception leaving it is recorded (outcome ``error``, or ``cancelled``)."""
        span = self._tracer.start_span(
            REPLY_SPAN,
            kind=self._kinds.CONSUMER,
            start_time=int(started * 1e9) if started is not None else None,
            attributes={
                "chatrelay.platform": platform,
                "chatrelay.workspace": workspace,
                "chatrelay.channel": channel,
                "chatrelay.reply_id": reply_id,
            },
        )
        parent = self._in_context(span)
        trace = ReplyTrace(self, span, parent)
        token = self._attach(parent)
        try:
            yield trace
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
            trace.outcome = trace.outcome or ("cancelled" if cancelled else "error")
            if not cancelled:
                span.record_exception(exc, escaped=True)
                span.set_status(self._status(self._error, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
            raise
        finally:
            span.set_attribute("chatrelay.outcome", trace.outcome or "unknown")
            self._detach(token)
            span.end()


class ReplyTrace:
    """One reply's trace. Its model requests' spans come from ``attempt`` (the
    ``ModelTrace`` protocol of ``core.llm.client``), its platform calls' from
    ``observer``."""

    def __init__(self, tracing: Tracing, span: Span, parent: Context) -> None:
        self._tracing = tracing
        self._span = span
        self._parent = parent
        self.trace_id = format(span.get_span_context().trace_id, "032x")
        self.outcome: str | None = None
        """``done``, ``stopped``, ``failed``, ``interrupted``, ``quota``, ``busy``."""

    def observer(self, inner: ReplyObserver | None) -> ReplyObserver:
        """An observer that makes this trace's platform-call spans and passes
        everything on to ``inner`` (metrics)."""
        return _TraceObserver(self, inner)

    def attempt(self, provider: Provider, model: str, number: int) -> ModelSpan:
        """The span of one model request (``core.llm.client.ModelTrace``):
        ``number`` counts the requests of this reply, retries and fallbacks
        included, from 1."""
        host = urlsplit(provider.base_url)
        name = _provider_name(provider)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.provider.name": name,
            "gen_ai.system": name,
            "chatrelay.llm_api": provider.api,
            "chatrelay.attempt": number,
        }
        if host.hostname:
            attributes["server.address"] = host.hostname
            attributes["server.port"] = host.port or (443 if host.scheme == "https" else 80)
        tracing = self._tracing
        span = tracing._tracer.start_span(
            f"chat {model}", context=self._parent, kind=tracing._kinds.CLIENT, attributes=attributes
        )
        return ModelSpan(span, tracing)

    def attribute(self, name: str, value: str | float | int) -> None:
        self._span.set_attribute(name, value)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        self._span.add_event(name, attributes)

    def span_ending_now(
        self, name: str, seconds: float, attributes: dict[str, Any], error: str | None = None
    ) -> None:
        """A child span that lasted ``seconds`` and ends now (the engine reports
        its calls once they are over)."""
        tracing = self._tracing
        end = time.time_ns()
        span = tracing._tracer.start_span(
            name,
            context=self._parent,
            kind=tracing._kinds.CLIENT if name != BUDGET_SPAN else tracing._kinds.INTERNAL,
            attributes=attributes,
            start_time=end - max(0, int(seconds * 1e9)),
        )
        if error is not None:
            span.set_attribute("error.type", error)
            if error not in _NOT_FAILURES:
                span.set_status(tracing._status(tracing._error, error))
        span.end(end_time=end)


_NOT_FAILURES = frozenset({"reroute", "user_stopped"})
"""Call endings that are the platform's word, not a failure of the call."""


class ModelSpan:
    """One model request's span (``core.llm.client.AttemptTrace``)."""

    __slots__ = ("_span", "_tracing")

    def __init__(self, span: Span, tracing: Tracing) -> None:
        self._span = span
        self._tracing = tracing

    def record(self, event: Event) -> None:
        """A ``Usage``, ``Finish`` or ``StreamError`` of this request."""
        span = self._span
        if type(event) is Usage:
            span.set_attribute("gen_ai.usage.input_tokens", event.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", event.output_tokens)
            if event.reasoning_tokens:
                span.set_attribute("chatrelay.usage.reasoning_tokens", event.reasoning_tokens)
        elif type(event) is Finish:
            span.set_attribute("gen_ai.response.finish_reasons", [event.reason])
        elif type(event) is StreamError:
            span.set_attribute("error.type", event.kind)
            if event.status is not None:
                span.set_attribute("http.response.status_code", event.status)
            tracing = self._tracing
            span.set_status(tracing._status(tracing._error, redact(event.message)))

    def end(self) -> None:
        self._span.end()


def _ignore(_: float) -> None:
    pass


class _TraceObserver:
    """``ReplyObserver`` and ``CallObserver``: the platform calls' spans, and
    the figures passed on to the metrics' observer."""

    def __init__(self, trace: ReplyTrace, inner: ReplyObserver | None) -> None:
        self._trace = trace
        self._inner = inner
        self._inner_calls = inner if isinstance(inner, CallObserver) else None
        # Per chunk: the inner observer's own method, with no layer of ours.
        self.visible: Callable[[float], None] = inner.visible if inner is not None else _ignore

    def first_token(self, seconds: float) -> None:
        self._trace.attribute("chatrelay.first_token_s", seconds)
        if self._inner is not None:
            self._inner.first_token(seconds)

    def first_visible(self, seconds: float) -> None:
        self._trace.attribute("chatrelay.first_visible_s", seconds)
        if self._inner is not None:
            self._inner.first_visible(seconds)

    def platform_call(self, call: SinkCall, seconds: float, budget_wait: float) -> None:
        if self._inner is not None:
            self._inner.platform_call(call, seconds, budget_wait)

    def rate_limited(self, scope: str, retry_after: float) -> None:
        self._trace.event(
            "chatrelay.rate_limited",
            {"chatrelay.scope": scope_kind(scope), "chatrelay.retry_after_s": retry_after},
        )
        if self._inner is not None:
            self._inner.rate_limited(scope, retry_after)

    def call_attempted(
        self,
        call: SinkCall,
        scopes: Sequence[str],
        seconds: float,
        budget_wait: float,
        error: str | None,
    ) -> None:
        self._trace.span_ending_now(
            CALL_SPAN.format(call=call.value),
            seconds,
            {
                "chatrelay.call": call.value,
                "chatrelay.scopes": _kinds(scopes),
                "chatrelay.budget_wait_s": budget_wait,
            },
            error,
        )
        if self._inner_calls is not None:
            self._inner_calls.call_attempted(call, scopes, seconds, budget_wait, error)

    def budget_waited(self, scope: str, seconds: float) -> None:
        self._trace.span_ending_now(
            BUDGET_SPAN,
            seconds,
            {"chatrelay.scope": scope_kind(scope), "chatrelay.waited_s": seconds},
        )
        if self._inner_calls is not None:
            self._inner_calls.budget_waited(scope, seconds)
