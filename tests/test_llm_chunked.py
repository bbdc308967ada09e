"""The model client's fast path for chunked bodies (``ChunkedBody`` in ``core.llm.client``) reads
exactly what httpx would: the same bytes, the same errors, the same timeouts,
and the connection goes back to the pool (or is closed) as httpx leaves it.

A raw TCP server writes scripted bytes, cut anywhere, so every boundary a
network makes (a chunk header, its data or its CRLF split between reads), chunk
extensions, trailers, malformed framing and cut connections are met; each
script is read once through the fast path and once through plain
``aiter_raw``, and both must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from core.llm import client as client_module
from core.llm.client import MAX_WAIT, ChunkedBody, LLMClient, Timeouts
from core.llm.events import TextDelta
from core.llm.messages import ChatMessage
from core.llm.provider import Provider
from tests.fakes.llm_server import FakeLLMServer, sse_response
from tests.fakes.streams import chat_stream, split_bytes

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes, size: str | None = None) -> bytes:
    return (size or f"{len(data):x}").encode() + b"\r\n" + data + b"\r\n"


EVENTS = [b'data: {"n": %d}\n\n' % i for i in range(40)]
BODY = b"".join(chunk(e) for e in EVENTS) + b"0\r\n\r\n"


@dataclass
class Script:
    pieces: list[bytes]
    """Written one by one, each flushed, with a pause between them."""
    close: bool = False
    """Close the connection after the last piece (else serve the next request)."""
    stall: bool = False
    """After the last piece, send nothing more until the client goes away."""


@dataclass
class RawServer:
    """Answers each request with the next script, byte for byte."""

    scripts: list[Script] = field(default_factory=list)
    connections: int = 0
    closed: int = 0
    """Connections ended (by either side)."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                script = self.scripts.pop(0)
                for piece in script.pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.001)
                if script.stall:
                    await reader.read()
                    return
                if script.close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.closed += 1
            writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[tuple[RawServer, str]]:
    server = RawServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server, f"http://127.0.0.1:{port}/v1/chat/completions"


async def read_body(
    client: httpx.AsyncClient, url: str, *, fast: bool
) -> tuple[bytes, tuple[type[Exception], str] | None, bool]:
    """The body, the error that ended it (type and message), and whether the fast
    path took it; read like ``LLMClient`` does."""
    parts: list[bytes] = []
    error = None
    taken = False
    async with client.stream("POST", url, json={}) as response:
        try:
            body = ChunkedBody.take(response) if fast else None
            taken = body is not None
            while body is not None:
                pieces = await body.read()
                if pieces is None:
                    break
                parts += pieces
            async for part in response.aiter_raw():
                parts.append(part)
        except httpx.HTTPError as exc:
            error = (type(exc), str(exc))
    return b"".join(parts), error, taken


async def both_ways(
    server: RawServer, url: str, script: Script, *, read_timeout: float = 2.0
) -> tuple[bytes, tuple[type[Exception], str] | None]:
    """Read ``script`` through the fast path and through plain httpx; they must
    agree (and the fast path must have taken the body)."""
    results = []
    for fast in (True, False):
        server.scripts.append(script)
        async with httpx.AsyncClient(timeout=read_timeout) as client:
            data, error, taken = await read_body(client, url, fast=fast)
        assert taken == fast
        results.append((data, error))
    assert results[0] == results[1]
    return results[0]


@pytest.mark.parametrize("seed", range(12))
async def test_a_body_cut_anywhere_reads_as_httpx_reads_it(
    raw_server: tuple[RawServer, str], seed: int
) -> None:
    server, url = raw_server
    pieces = split_bytes(HEAD + BODY, seed=seed)
    data, error = await both_ways(server, url, Script(pieces))
    assert error is None
    assert data == b"".join(EVENTS)


@pytest.mark.parametrize(
    "body",
    [
        chunk(b"hello", "5;name=value") + chunk(b"world") + b"0\r\n\r\n",  # an extension
        chunk(b"hello", "5 ") + b"0\r\n\r\n",  # whitespace h11 tolerates
        chunk(b"hello", "00000000000000000005") + b"0\r\n\r\n",  # 20 digits
        chunk(b"0123456789ABCDEF", "0010") + chunk(b"x" * 26, "1A") + b"0\r\n\r\n",
        chunk(b"hello") + b"0\r\nX-Trailer: yes\r\n\r\n",  # trailers
        chunk(b"hello") + b"000\r\n\r\n",  # a last chunk with leading zeros
        chunk(b"y" * (MAX_WAIT + 10)) + chunk(b"after") + b"0\r\n\r\n",  # too big to wait for
    ],
    ids=["extension", "whitespace", "20-digits", "hex-case", "trailers", "zeros", "big"],
)
async def test_unusual_framing_is_read_as_httpx_reads_it(
    raw_server: tuple[RawServer, str], body: bytes
) -> None:
    server, url = raw_server
    for pieces in ([HEAD + body], split_bytes(HEAD + body, 7)):
        data, error = await both_ways(server, url, Script(pieces))
        assert error is None
        assert data.startswith((b"hello", b"0123", b"yyy"))


@pytest.mark.parametrize(
    "body",
    [
        chunk(b"fine") + b"5\r\nhelloXX",  # a footer that is not CRLF
        chunk(b"fine") + b"zz\r\nhello\r\n",  # not a size
        chunk(b"fine") + b"5\r\nhel",  # cut inside a chunk's data
        chunk(b"fine") + b"5",  # cut inside a chunk's header
        chunk(b"fine"),  # cut at a chunk boundary
        b"",  # cut right after the headers
    ],
    ids=["footer", "header", "cut-in-data", "cut-in-header", "cut-at-boundary", "cut-at-once"],
)
async def test_a_malformed_or_cut_body_fails_as_httpx_fails(
    raw_server: tuple[RawServer, str], body: bytes
) -> None:
    server, url = raw_server
    for pieces in ([HEAD, body] if body else [HEAD], split_bytes(HEAD + body, 3)):
        data, error = await both_ways(server, url, Script(pieces, close=True))
        assert error is not None and error[0] is httpx.RemoteProtocolError
        assert data.startswith(b"fine") or not body


async def test_the_read_timeout_is_httpx_s(raw_server: tuple[RawServer, str]) -> None:
    server, url = raw_server
    script = Script([HEAD, chunk(b"hello")], stall=True)
    data, error = await both_ways(server, url, script, read_timeout=0.2)
    assert data == b"hello"
    assert error is not None and error[0] is httpx.ReadTimeout


async def test_a_big_chunk_streams_in_pieces_as_it_arrives(
    raw_server: tuple[RawServer, str],
) -> None:
    """Only chunks up to ``MAX_WAIT`` bytes are waited for whole: a bigger one's
    first bytes are read before the rest comes (here: never)."""
    server, url = raw_server
    started = b"%x\r\n" % (MAX_WAIT + 1) + b"y" * 1000
    script = Script([HEAD, chunk(b"small"), started], stall=True)
    data, error = await both_ways(server, url, script, read_timeout=0.3)
    assert data == b"small" + b"y" * 1000
    assert error is not None and error[0] is httpx.ReadTimeout


async def test_a_whole_body_returns_the_connection_to_the_pool(
    raw_server: tuple[RawServer, str],
) -> None:
    server, url = raw_server
    server.scripts += [Script([HEAD + BODY]) for _ in range(3)]
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            data, error, taken = await read_body(client, url, fast=True)
            assert taken and error is None and data == b"".join(EVENTS)
    assert server.connections == 1


async def test_a_body_left_unread_closes_its_connection(
    raw_server: tuple[RawServer, str],
) -> None:
    server, url = raw_server
    server.scripts += [Script([HEAD, chunk(b"hello")], stall=True), Script([HEAD + BODY])]
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", url, json={}) as response:
            body = ChunkedBody.take(response)
            assert body is not None
            assert await body.read() == [b"hello"]
        # a Stop: the rest is never read, so the connection can't serve another request
        data, error, taken = await read_body(client, url, fast=True)
        assert taken and error is None and data == b"".join(EVENTS)
    assert server.connections == 2


async def test_a_body_already_read_or_not_chunked_is_not_taken(
    raw_server: tuple[RawServer, str],
) -> None:
    server, url = raw_server
    fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    server.scripts += [Script([fixed]), Script([HEAD + BODY])]
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", url, json={}) as response:
            assert ChunkedBody.take(response) is None
            await response.aread()
        async with client.stream("POST", url, json={}) as response:
            async for _ in response.aiter_raw():
                break
            assert ChunkedBody.take(response) is None
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"x"))
    async with (
        httpx.AsyncClient(transport=transport) as client,
        client.stream("GET", "http://test/") as response,
    ):
        assert ChunkedBody.take(response) is None


async def test_the_model_client_takes_the_fast_path(
    llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a real provider-like server (aiohttp's chunked writer), every
    chunk of the stream comes through the fast path, none through httpx's."""
    pieces = [f"word{i} " for i in range(200)]
    llm_server.enqueue(sse_response(chat_stream(pieces)))
    fast: list[bytes] = []
    slow: list[bytes] = []
    read, aiter_raw = ChunkedBody.read, httpx.Response.aiter_raw

    async def counted_read(self: ChunkedBody) -> list[bytes] | None:
        got = await read(self)
        fast.extend(got or ())
        return got

    async def counted_raw(self: httpx.Response, size: int | None = None) -> AsyncIterator[bytes]:
        async for part in aiter_raw(self, size):
            slow.append(part)
            yield part

    monkeypatch.setattr(ChunkedBody, "read", counted_read)
    monkeypatch.setattr(httpx.Response, "aiter_raw", counted_raw)
    client = LLMClient(
        [Provider(llm_server.base_url, "m")], timeouts=Timeouts(connect=2, first_token=2, idle=2)
    )
    try:
        events = [e async for e in client.stream([ChatMessage("user", "hi")])]
    finally:
        await client.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(pieces)
    assert len(fast) > len(pieces) and slow == []


async def test_without_httpx_s_internals_the_ordinary_path_reads(
    llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "FAST_PATH", False)
    pieces = ["Hel", "lo"]
    llm_server.enqueue(sse_response(chat_stream(pieces)))
    client = LLMClient([Provider(llm_server.base_url, "m")])
    try:
        events = [e async for e in client.stream([ChatMessage("user", "hi")])]
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello"


def test_without_the_fast_paths_pieces_the_client_loads_and_takes_the_ordinary_path() -> None:
    """Another httpx, httpcore or h11 may lack a piece ``ChunkedBody`` relies on:
    the module must still import, with the fast path off (``take`` then gives
    every body to httpx)."""
    script = textwrap.dedent(
        """
        import httpcore._async.connection_pool as pool
        del pool.PoolByteStream  # as if another httpcore had no such class
        from core.llm import client
        assert client.FAST_PATH is False
        print("ordinary path")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ordinary path"
