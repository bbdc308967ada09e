"""Streams a model reply over HTTP: retries, timeouts and fallbacks, for any dialect.

What users feel most is a reply that never starts or dies silently, so the
rules are:

- Before the first token, a failure is cheap to hide: connect errors, 429
  (after its ``Retry-After``) and 5xx are retried with exponential backoff and
  jitter, then the next provider of the fallback chain is tried.
- After the first token nothing is retried (the user already sees text); the
  failure becomes a ``StreamError`` event and the engine keeps the partial text.
- Timeouts: ``connect``; ``idle`` (no byte at all for that long, also while
  waiting for the response to start); ``first_token`` (no content yet, even if
  keep-alive comments keep arriving).
- Closing the iterator (a user's Stop) closes the HTTP response at once.
- When the stream says it is over (``[DONE]``, or the dialect's last event), the
  rest of the body (normally only HTTP's last, empty chunk) is read before the
  last event is yielded, if it arrives within ``Timeouts.body_end`` and is at
  most ``BODY_END_BYTES``, so the connection goes back to the pool instead of
  being closed (every reply would otherwise pay a new TCP connection and TLS
  handshake). A server that keeps the body open after its end holds the reply
  no longer than that bound; its connection is then closed.
- The body's chunks are read off httpx's connection by ``ChunkedBody`` (a fast
  path past httpx's per-chunk layers and h11), and the body's end by httpx.

Every stream this client yields ends with exactly one ``Finish`` or ``StreamError``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.request import getproxies

import h11
import httpx

try:  # the fast path's pieces of httpx, httpcore and h11 (see ``ChunkedBody``)
    from h11._readers import ChunkedReader
    from httpcore._async.connection_pool import PoolByteStream
    from httpcore._async.http11 import AsyncHTTP11Connection, HTTP11ConnectionByteStream
    from httpx._client import BoundAsyncStream
    from httpx._transports.default import AsyncResponseStream, map_httpcore_exceptions

    FAST_PATH = True
    _LAYERS: tuple[tuple[str, type], ...] = (
        ("_stream", AsyncResponseStream),
        ("_httpcore_stream", PoolByteStream),
        ("_stream", HTTP11ConnectionByteStream),
        ("_connection", AsyncHTTP11Connection),
    )
    """From httpx's response stream down to httpcore's HTTP/1.1 connection: the
    attribute that leads to each layer, and the layer's exact type."""
except ImportError:  # pragma: no cover - another httpx, httpcore or h11: the ordinary path
    FAST_PATH = False

from core.llm.dialect import Dialect
from core.llm.events import CONTENT_EVENTS, Event, Finish, StreamError, Usage
from core.llm.messages import ChatMessage
from core.llm.pool import SHARDS, ShardedTransport
from core.llm.provider import Provider
from core.llm.sse import SSEDecoder
from core.reply.observe import LLMObserver

log = logging.getLogger(__name__)

DIALECTS: dict[str, tuple[str, str]] = {
    "chat": ("core.llm.chat", "ChatCompletions"),
    "anthropic": ("core.llm.anthropic", "AnthropicMessages"),
    "responses": ("core.llm.responses", "OpenAIResponses"),
}
"""Each wire format's module and class, imported only for a provider that uses
it: ``chatrelay ask`` with one Chat Completions provider needs neither of the others."""


def dialect_for(api: str) -> Dialect:
    """The dialect of ``api`` (``chat``, ``anthropic`` or ``responses``)."""
    module, name = DIALECTS[api]
    dialect: Dialect = getattr(importlib.import_module(module), name)()
    return dialect


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    first_token: float = 90.0
    idle: float = 60.0
    body_end: float = 0.1
    """Seconds the rest of a body may take once the stream said it is over (its
    last, empty chunk is normally right behind): read in time, the connection
    is reused; otherwise it is closed."""


BODY_END_BYTES = 64 * 1024
"""Most bytes read for the rest of a body after the read that brought the
stream's end, to reuse its connection; a server that sends more is not worth
it (its connection is closed)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    """Retries per provider, before moving on to the next one."""
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 30.0
    """A ``Retry-After`` longer than this moves on to the next provider instead."""

    def backoff(self, attempt: int, jitter: float) -> float:
        """Exponential, with "equal jitter" so synchronized clients spread out."""
        delay = min(self.max_delay, self.base_delay * 2.0**attempt)
        return delay / 2 + delay / 2 * jitter


class AttemptTrace(Protocol):
    """What a trace records of one request to a provider (``core.telemetry.tracing``)."""

    def record(self, event: Event) -> None:
        """The request's ``Usage``, ``Finish`` or ``StreamError`` (no other event)."""
        ...

    def end(self) -> None:
        """The request is over (finished, failed, or closed by its reader)."""
        ...


class ModelTrace(Protocol):
    """A reply's trace, given to ``LLMClient.stream``: one span per request."""

    def attempt(self, provider: Provider, model: str, number: int) -> AttemptTrace:
        """A request to ``provider`` for ``model`` starts; ``number`` counts this
        stream's requests (retries and fallbacks) from 1."""
        ...


_TRACED = (Usage, Finish, StreamError)


async def _traced(
    events: AsyncGenerator[Event, None], span: AttemptTrace
) -> AsyncGenerator[Event, None]:
    """``events`` with their usage, finish and error recorded on ``span``, which
    ends with them. Only a traced stream pays this layer."""
    try:
        async with aclosing(events):
            async for event in events:
                if type(event) in _TRACED:
                    span.record(event)
                yield event
    finally:
        span.end()


class LLMClient:
    """One client per process; ``stream`` may be called concurrently."""

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        observer: LLMObserver | None = None,
    ) -> None:
        if not providers:
            raise ValueError("at least one provider is needed")
        for provider in providers:
            if provider.api not in DIALECTS:
                raise ValueError(
                    f"unknown LLM API {provider.api!r}: use chat, anthropic or responses"
                )
        self.providers = list(providers)
        self._dialects = {api: dialect_for(api) for api in {p.api for p in self.providers}}
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._own_http = http is None
        self._http = http or http_client(self.timeouts, _needs_tls(self.providers))
        self._sleep = sleep
        self._jitter = jitter
        self.observer = observer
        """Told of every request, error and fallback (metrics); may be set later."""

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        extra: Mapping[str, Any] | None = None,
        trace: ModelTrace | None = None,
    ) -> AsyncIterator[Event]:
        """The reply's events, from the first provider that starts answering;
        with a ``trace``, a span per request."""
        failures: list[str] = []
        requests = 0
        last: StreamError | None = None
        observer = self.observer
        for index, provider in enumerate(self.providers):
            for attempt in range(self.retry.max_retries + 1):
                started = False
                error: StreamError | None = None
                if observer is not None:
                    observer.request(provider.label)
                attempt_events = self._attempt(provider, messages, extra)
                if trace is not None:
                    requests += 1
                    model = {**provider.extra_body, **(extra or {})}.get("model", provider.model)
                    span = trace.attempt(provider, str(model), requests)
                    attempt_events = _traced(attempt_events, span)
                async with aclosing(attempt_events) as events:
                    async for event in events:
                        if not started:
                            if type(event) is StreamError:
                                error = event
                                break
                            started = type(event) in CONTENT_EVENTS or type(event) is Finish
                        elif type(event) is StreamError and observer is not None:
                            observer.error(provider.label, error_reason(event), True)
                        yield event
                if error is None:
                    return
                last = error
                if observer is not None:
                    observer.error(provider.label, error_reason(error), False)
                log.warning(
                    "model %s failed before its first token: %s",
                    provider.label,
                    error.message,
                    extra={"error": error.kind},
                )
                delay = self._retry_delay(error, attempt)
                if delay is None:
                    break
                await self._sleep(delay)
            if last is not None:
                failures.append(f"{provider.label}: {last.message}")
                if observer is not None and index + 1 < len(self.providers):
                    observer.fallback(provider.label, error_reason(last))
        assert last is not None
        if len(failures) > 1:
            message = "every model failed — " + "; ".join(failures)
        else:
            message = last.message
        yield StreamError(last.kind, message, False, last.status, last.retry_after)

    def _retry_delay(self, error: StreamError, attempt: int) -> float | None:
        """Seconds to wait before retrying the same provider, or None to move on."""
        if not error.retryable or attempt >= self.retry.max_retries:
            return None
        delay = self.retry.backoff(attempt, self._jitter())
        if error.retry_after is not None:
            if error.retry_after > self.retry.max_retry_after:
                return None
            delay = max(delay, error.retry_after)
        return delay

    async def _attempt(
        self,
        provider: Provider,
        messages: Sequence[ChatMessage],
        extra: Mapping[str, Any] | None,
    ) -> AsyncGenerator[Event, None]:
        dialect = self._dialects[provider.api]
        body = dialect.body(provider.model, messages, {**provider.extra_body, **(extra or {})})
        headers = {
            "accept": "text/event-stream",
            **dialect.headers(provider.api_key),
            **provider.headers,
        }
        request = self._http.build_request(
            "POST", provider.base_url + dialect.path, json=body, headers=headers
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.first_token
        response: httpx.Response | None = None
        got_content = False
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._http.send(request, stream=True)
            if response.status_code >= 300:
                yield dialect.error(response.status_code, await response.aread(), response.headers)
                return
            content_type = response.headers.get("content-type", "")
            if "event-stream" not in content_type:
                yield _not_a_stream(dialect, response.status_code, await response.aread())
                return
            decoder = SSEDecoder()
            parser = dialect.parser()
            # Undecoded bytes skip a layer of httpx per chunk; only compression needs it.
            encoded = "content-encoding" in response.headers
            # Fast path: whole chunks read off httpx's connection, skipping httpx's seven
            # per-chunk layers and h11 (~8 µs a chunk); it hands the body back to httpx at
            # its end or at anything unusual (``ChunkedBody`` says what and why).
            fast = None if encoded else ChunkedBody.take(response)
            chunks: AsyncIterator[bytes] | None = None  # httpx's, once ``fast`` hands back
            ending: list[Event] | None = None  # the events of the chunk that ended the stream
            while ending is None:
                if fast is not None:
                    read = fast.read()
                else:
                    if chunks is None:
                        chunks = response.aiter_bytes() if encoded else response.aiter_raw()
                    read = _next_chunk(chunks)
                if got_content:
                    pieces = await read
                else:  # until the first token, every read is bounded by its deadline
                    async with asyncio.timeout_at(deadline):
                        pieces = await read
                if pieces is None:
                    if fast is None:
                        break  # the body's end
                    fast = None  # handed back to httpx: read on through ``chunks``
                    continue
                for chunk in pieces:
                    events = decoder.feed_to(chunk, parser)
                    if parser.done:
                        ending = events
                        break
                    for event in events:
                        if not got_content:
                            got_content = type(event) in CONTENT_EVENTS
                        yield event
            if ending is None:  # the body ended before the stream said it was over
                decoder.close()
                for event in parser.end():
                    yield event
                return
            # The stream is over: what came before its last event, then the rest of the
            # body (bounded) so the connection can be reused, then the last event.
            last = _terminal_at(ending)
            for event in ending[:last]:
                yield event
            await self._finish_body(response, fast, chunks)
            for event in ending[last:]:
                yield event
        except TimeoutError:
            yield StreamError(
                "timeout",
                f"no answer from the model within {self.timeouts.first_token:g}s",
                retryable=True,
            )
        except httpx.TimeoutException as exc:
            yield StreamError("timeout", _timeout_message(exc, self.timeouts), retryable=True)
        except httpx.ConnectError as exc:
            yield StreamError(
                "connect", f"could not connect to {provider.label}: {exc}", retryable=True
            )
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            message = (
                "the connection to the model broke mid-reply"
                if got_content
                else f"the connection to {provider.label} broke: {exc or type(exc).__name__}"
            )
            yield StreamError("truncated", message, retryable=True)
        finally:
            if response is not None:
                await response.aclose()

    async def _finish_body(
        self,
        response: httpx.Response,
        fast: ChunkedBody | None,
        chunks: AsyncIterator[bytes] | None,
    ) -> None:
        """Read what is left of ``response``'s body after the stream's end (through
        ``fast`` while it reads, then ``chunks`` or ``aiter_raw``), so httpx sees the
        body end and returns the connection to its pool. Only if it all arrives within
        ``timeouts.body_end`` seconds and is at most ``BODY_END_BYTES`` (what came in
        the same read as the stream's end is already read, and skipped): otherwise, or
        if reading it fails, it stops there and the caller's ``aclose`` closes the
        connection (the reply is complete either way)."""
        left = BODY_END_BYTES
        try:
            async with asyncio.timeout(self.timeouts.body_end):
                while fast is not None:
                    pieces = await fast.read()
                    if pieces is None:
                        break
                    left -= sum(len(piece) for piece in pieces)
                    if left < 0:
                        return
                if chunks is None:
                    chunks = response.aiter_raw()
                async for chunk in chunks:
                    left -= len(chunk)
                    if left < 0:
                        return
        except (TimeoutError, httpx.HTTPError, httpx.StreamError) as exc:
            log.debug("the body after the stream's end was not read: %r", exc)


async def _next_chunk(chunks: AsyncIterator[bytes]) -> list[bytes] | None:
    """The next chunk of httpx's body as ``ChunkedBody.read`` gives them; None at
    the end."""
    try:
        return [await anext(chunks)]
    except StopAsyncIteration:
        return None


_TERMINAL = (Finish, StreamError)


def _terminal_at(events: Sequence[Event]) -> int:
    """Where the stream's last event (``Finish`` or ``StreamError``) is in ``events``."""
    for index, event in enumerate(events):
        if type(event) in _TERMINAL:
            return index
    return len(events)


def http_client(timeouts: Timeouts, verify: bool, *, shards: int = SHARDS) -> httpx.AsyncClient:
    """The client's HTTP client: its requests spread over up to ``shards`` pools
    (``core.llm.pool``; 1: httpx's own single pool). A proxy from the environment
    gets httpx's own transport with the same TLS context and limits."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    context = httpx.create_ssl_context(verify=verify)
    transport = (
        ShardedTransport(verify=context, limits=limits, shards=shards) if shards > 1 else None
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=timeouts.connect,
            read=timeouts.idle,
            write=timeouts.idle,
            pool=timeouts.connect,
        ),
        limits=limits,
        verify=context,
        transport=transport,
    )


def error_reason(error: StreamError) -> str:
    """A bounded word for metrics: the error's kind (``connect``, ``timeout``,
    ``provider``, ``truncated``, ``malformed``, ``cancelled``), HTTP errors by
    status (``http_429``) or class (``http_4xx``, ``http_5xx``); never its message."""
    status = error.status
    if error.kind == "http" or (status is not None and status >= 400):
        if status == 429:
            return "http_429"
        if status is not None and 400 <= status < 600:
            return f"http_{status // 100}xx"
        return "http"
    kind = error.kind
    return kind if kind.isidentifier() and kind.islower() and len(kind) <= 20 else "other"


def _needs_tls(providers: Sequence[Provider]) -> bool:
    """Whether the client needs a verifying TLS context. Building one (the CA
    bundle) costs 30-50 ms of CPU, a tenth of a short ``chatrelay ask``, and
    providers that are all plain ``http://`` (a local server, the demo model)
    never use it; a proxy from the environment might, so then it is built."""
    if getproxies():
        return True
    return not all(p.base_url.lower().startswith("http://") for p in providers)


def _timeout_message(exc: httpx.TimeoutException, timeouts: Timeouts) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connecting to the model timed out after {timeouts.connect:g}s"
    return f"the model sent nothing for {timeouts.idle:g}s"


def _not_a_stream(dialect: Dialect, status: int, body: bytes) -> StreamError:
    """A 2xx that is not an event stream: usually a JSON error from a gateway."""
    error = dialect.error(status, body, {})
    return StreamError(
        "malformed",
        f"the model answered without an event stream ({error.message})",
        retryable=True,
        status=status,
    )


MAX_WAIT = 64 * 1024
"""A chunk up to this size that arrives in pieces is waited for and delivered
whole; a larger one goes back to h11, which delivers its pieces as they come."""

_HEADER = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
_PARTIAL_HEADER = re.compile(rb"[0-9A-Fa-f]{0,16}\r?")
"""What may still become a ``_HEADER`` with more bytes."""


class ChunkedBody:
    """Whole HTTP/1.1 chunks read straight off the connection httpx opened: the fast
    path of a streamed model reply.

    A provider sends one SSE event per HTTP chunk, and httpx hands each chunk up
    through seven layers: ``Response.aiter_raw``, ``BoundAsyncStream``,
    ``AsyncResponseStream``, ``PoolByteStream``, ``HTTP11ConnectionByteStream`` and
    ``_receive_response_body``, async generators all, then ``_receive_event`` (a
    ``map_exceptions`` context manager per event) and h11's general chunked reader
    and state machine. That costs about 8 µs a chunk here, more than everything
    chatrelay then does with it; 50,000 chunks are 0.4 s of a ``chatrelay ask``.

    ``ChunkedBody`` skips those layers and h11 for the body's well-formed chunks
    (``SIZE\\r\\n DATA\\r\\n``, size in hex, no extension): it takes the bytes h11
    has buffered after the headers, reads the socket itself (through httpcore's
    network stream, with the request's read timeout, errors mapped by httpx's own
    mapping, as httpcore reads it) and splits whole chunks, many per read.
    Everything else stays httpx's: connecting, TLS, proxies, the pool, the request,
    the status and headers, and the end of the body. At the first thing it does not
    take (the last chunk, a chunk extension, anything malformed, a chunk over
    ``MAX_WAIT`` bytes still arriving, the connection closing) it hands the
    unparsed bytes back to h11 (``receive_data``, at a chunk boundary, where h11's
    reader stands since the headers) and the caller reads the rest with
    ``aiter_raw``: h11 parses the last chunk and the trailers, so the connection
    returns to the pool as before, and reports a malformed or cut body with the
    same exception as before. The only difference a reader could see: a chunk that
    arrives in pieces is delivered whole (h11 delivers its pieces), unless it is
    over ``MAX_WAIT`` bytes.

    It relies on httpx's, httpcore's and h11's private structure, so ``take`` checks
    every piece it uses (exact types, h11's reader at a chunk boundary) and
    returns None, the ordinary path, when anything differs: another version of
    those libraries, HTTP/2, a mocked transport, a body already read.

    Use: ``read`` until it returns None, then read the rest with
    ``response.aiter_raw()``.
    """

    __slots__ = ("_buffer", "_h11", "_network", "_size", "_timeout")

    def __init__(self, h11_state: Any, network: Any, size: int, timeout: float | None) -> None:
        self._h11 = h11_state
        self._network = network
        self._size = size
        self._timeout = timeout
        buffered = h11_state._receive_buffer
        self._buffer: bytes | None = bytes(buffered.maybe_extract_at_most(len(buffered)) or b"")

    @classmethod
    def take(cls, response: httpx.Response) -> ChunkedBody | None:
        """The body of ``response`` (an unread, chunked, HTTP/1.1 body from a pooled
        httpx transport), or None when anything is not as expected."""
        if not FAST_PATH or response.is_stream_consumed or response.is_closed:
            return None
        connection: Any = response.stream
        if type(connection) is not BoundAsyncStream:
            return None
        for attribute, expected in _LAYERS:  # down to the connection, each as known
            connection = getattr(connection, attribute, None)
            if type(connection) is not expected:
                return None
        state = getattr(connection, "_h11_state", None)
        network = response.extensions.get("network_stream")
        if (
            type(state) is not h11.Connection
            or network is None
            or network is not getattr(connection, "_network_stream", None)
            or state.their_state is not h11.SEND_BODY
            or getattr(state, "_receive_buffer_closed", True) is not False
            or not hasattr(getattr(state, "_receive_buffer", None), "maybe_extract_at_most")
        ):
            return None
        reader = getattr(state, "_reader", None)
        if (
            type(reader) is not ChunkedReader
            or getattr(reader, "_bytes_in_chunk", None) != 0
            or getattr(reader, "_bytes_to_discard", None) != b""
            or getattr(reader, "_reading_trailer", None) is not False
        ):
            return None
        timeouts = response.request.extensions.get("timeout", {})
        size = getattr(connection, "READ_NUM_BYTES", 64 * 1024)
        return cls(state, network, size, timeouts.get("read"))

    async def read(self) -> list[bytes] | None:
        """The next whole chunks (at least one), or None once the rest of the body
        is h11's again (then for good)."""
        buffer = self._buffer
        if buffer is None:
            return None
        while True:
            chunks, used, wait = _split(buffer)
            if chunks:
                self._buffer = buffer[used:]
                return chunks
            if not wait:
                self._hand_back(buffer, eof=False)
                return None
            with map_httpcore_exceptions():
                data = await self._network.read(self._size, timeout=self._timeout)
            if not data:
                self._hand_back(buffer, eof=True)
                return None
            buffer = buffer + data if buffer else data

    def _hand_back(self, rest: bytes, *, eof: bool) -> None:
        """Give h11 the bytes from the chunk boundary on (and the connection's end,
        as httpcore would), for ``aiter_raw`` to read."""
        self._buffer = None
        if rest:
            self._h11.receive_data(rest)
        if eof:
            self._h11.receive_data(b"")


def _split(buffer: bytes) -> tuple[list[bytes], int, bool]:
    """The whole chunks at the start of ``buffer``, how many bytes they took, and
    (when there are none) whether more bytes may make one (else: h11's turn)."""
    chunks: list[bytes] = []
    pos = 0
    length = len(buffer)
    match = _HEADER.match
    while True:
        header = match(buffer, pos)
        if header is None:
            return chunks, pos, _PARTIAL_HEADER.fullmatch(buffer, pos) is not None
        size = int(header[1], 16)
        start = header.end()
        end = start + size
        if size == 0:  # the last chunk: h11 reads it and the trailers
            return chunks, pos, False
        if end + 2 > length:
            return chunks, pos, size <= MAX_WAIT
        if buffer[end : end + 2] != b"\r\n":
            return chunks, pos, False
        chunks.append(buffer[start:end])
        pos = end + 2
