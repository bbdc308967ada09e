"""The built-in demo model: a tiny OpenAI-compatible server on a loopback port.

With no ``LLM_BASE_URL`` chatrelay still runs end to end: the demo answers
over real HTTP with real ``chat.completion.chunk`` SSE, so the client, the SSE
decoder, the dialect, the engine and the sink all do their real work. The
answer says plainly that it is the demo and how to point at a real provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time

DEMO_MODEL = "chatrelay-demo"

_TOKEN = re.compile(r"\s*\S+|\s+")


def demo_answer(prompt: str) -> str:
    said = " ".join(prompt.split())
    if len(said) > 200:
        said = said[:199] + "…"
    return (
        "**This is chatrelay's built-in demo model, not a real LLM.** "
        f"You said: “{said or '(nothing)'}”.\n\n"
        "The words you are reading travel the whole real path: an OpenAI-style "
        "event stream over HTTP on a loopback port, the SSE decoder, the reply "
        "engine and its pacing, and this chat's sink.\n\n"
        "To talk to a real model, set these (in the environment or a `.env` file) "
        "and start chatrelay again:\n\n"
        "```sh\n"
        "LLM_BASE_URL=https://openrouter.ai/api/v1   # any OpenAI-compatible base\n"
        "LLM_API_KEY=sk-...\n"
        "LLM_MODEL=openai/gpt-4o-mini\n"
        "```\n"
    )


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": DEMO_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


class DemoModelServer:
    """Serves ``POST /v1/chat/completions`` on 127.0.0.1 with a streamed demo answer."""

    def __init__(self, token_delay: float = 0.03) -> None:
        self.token_delay = token_delay
        self._server: asyncio.Server | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def __aenter__(self) -> DemoModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in header_lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            method, path, _ = request_line.split(" ", 2)
            if method != "POST" or not path.endswith("/chat/completions"):
                await self._json(writer, 404, {"error": {"message": f"no route {path}"}})
                return
            try:
                request = json.loads(body)
                messages = request.get("messages", [])
                prompt = next(
                    (m.get("content", "") for m in reversed(messages) if m.get("role") == "user"),
                    "",
                )
            except (ValueError, AttributeError):
                await self._json(writer, 400, {"error": {"message": "invalid JSON body"}})
                return
            await self._stream(writer, demo_answer(str(prompt)))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            # The server is stopping mid-answer (the reader went away). This task is
            # the connection's own and nobody awaits it: asyncio would log the
            # cancellation as an error if it escaped.
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stream(self, writer: asyncio.StreamWriter, answer: str) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
        )
        writer.write(_chunk({"role": "assistant", "content": ""}))
        for token in _TOKEN.findall(answer):
            writer.write(_chunk({"content": token}))
            await writer.drain()
            await asyncio.sleep(self.token_delay)
        writer.write(_chunk({}, finish="stop"))
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()

    @staticmethod
    async def _json(writer: asyncio.StreamWriter, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
