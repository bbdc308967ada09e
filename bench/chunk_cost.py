"""Per-chunk cost of chatrelay's core path against the official openai SDK, one run.

Every contender reads the same Chat Completions byte stream (one SSE event per
network chunk, as providers send it):

- ``openai SDK``: ``AsyncOpenAI(...).chat.completions.create(stream=True)``
  iterated to the end, reading ``delta.content`` (what most bots do);
- ``chatrelay client+engine``: ``LLMClient.stream`` into a ``Reply`` whose sink
  does nothing, so HTTP, SSE decode, normalisation and engine accounting run;
- both of these go through httpx with an in-memory ``MockTransport``, so the
  network is out of the picture and the HTTP overhead is the same for both;
- ``chatrelay core`` (SSE decode + normalise + engine accounting, fed bytes
  directly, in the client's loop) and a bare ``json.loads`` loop: the floor any
  reader that decodes each chunk with the standard library pays. Target: core
  at most half of it.

The contenders take turns, one run each per round, so a machine shared with
other work slows them alike; the figures are medians over the rounds.

Run: ``make bench`` (or ``python -m bench.chunk_cost``). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import httpx

from core.llm.chat import ChatCompletions
from core.llm.client import LLMClient
from core.llm.messages import ChatMessage
from core.llm.provider import Provider
from core.llm.sse import SSEDecoder
from core.reply.engine import Reply
from core.reply.pacing import Pacing
from core.reply.sink import Frame, Outcome, SinkCall

MESSAGES = [ChatMessage("user", "hello")]


def chat_chunks(count: int) -> list[bytes]:
    """``count`` content chunks plus role, finish, usage and [DONE], one per list item."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + b"\n\n"

    chunks = [
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    ]
    words = ["Hello", " world", ",", " streaming", " tokens", " é", " 🎉", " and"]
    for i in range(count):
        delta = {"content": words[i % len(words)]}
        chunks.append(event([{"index": 0, "delta": delta, "finish_reason": None}]))
    chunks.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    usage = {"prompt_tokens": 5, "completion_tokens": count, "total_tokens": count + 5}
    chunks.append(event([], usage=usage))
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def mock_http(chunks: Sequence[bytes]) -> httpx.AsyncClient:
    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            for chunk in chunks:
                yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Body())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


class NullSink:
    """A platform that costs nothing, so only chatrelay's own work is measured."""

    limit = 1 << 30
    append_only = False

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        return ()

    async def open(self) -> None:
        return None

    async def render(self, frame: Frame) -> None:
        return None

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        return None


async def run_openai_sdk(chunks: Sequence[bytes]) -> int:
    from openai import AsyncOpenAI

    http = mock_http(chunks)
    client = AsyncOpenAI(api_key="x", base_url="http://bench.invalid/v1", http_client=http)
    text = []
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    await http.aclose()
    return len("".join(text))


async def run_chatrelay(chunks: Sequence[bytes]) -> int:
    http = mock_http(chunks)
    client = LLMClient([Provider("http://bench.invalid/v1", "m")], http=http)
    reply = Reply(NullSink(), pacing=Pacing(min_interval=1.0))
    result = await reply.run(client.stream(MESSAGES))
    await http.aclose()
    assert result.outcome.state == "done", result.outcome
    return len(result.text)


async def run_core(chunks: Sequence[bytes]) -> int:
    """SSE decode + normalise + engine accounting, fed bytes directly, in the
    client's loop (``SSEDecoder.feed_to`` the dialect's parser)."""
    dialect = ChatCompletions()

    async def events():  # type: ignore[no-untyped-def]
        decoder = SSEDecoder()
        parser = dialect.parser()
        for chunk in chunks:
            for event in decoder.feed_to(chunk, parser):
                yield event
            if parser.done:
                return
        decoder.close()
        for event in parser.end():
            yield event

    reply = Reply(NullSink(), pacing=Pacing(min_interval=1.0))
    result = await reply.run(events())
    return len(result.text)


async def run_json_loads(chunks: Sequence[bytes]) -> int:
    total = 0
    for chunk in chunks:
        data = chunk[6:-2]
        if data != b"[DONE]":
            obj = json.loads(data)
            if obj["choices"]:
                total += len(obj["choices"][0]["delta"].get("content") or "")
    return total


Runner = Callable[[Sequence[bytes]], Coroutine[Any, Any, int]]
CONTENDERS: list[tuple[str, Runner]] = [
    ("openai SDK (reference)", run_openai_sdk),
    ("chatrelay client+engine", run_chatrelay),
    ("chatrelay core (no HTTP)", run_core),
    ("bare json.loads loop", run_json_loads),
]


def once(runner: Runner, chunks: Sequence[bytes]) -> float:
    """µs per content chunk of one run, timed inside the event loop: creating and
    closing a loop (about 0.75 ms here, the same for every contender) is no
    chunk's cost, and it weighed a sixth of a 5,000-chunk run of the json loop."""

    async def timed() -> float:
        start = time.perf_counter()
        await runner(chunks)
        return time.perf_counter() - start

    gc.collect()
    return asyncio.run(timed()) / (len(chunks) - 4) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    chunks = chat_chunks(args.chunks)
    lengths = {name: asyncio.run(runner(chunks)) for name, runner in CONTENDERS}  # warm-up
    assert len(set(lengths.values())) == 1, f"contenders disagree on the text: {lengths}"
    samples: dict[str, list[float]] = {name: [] for name, _ in CONTENDERS}
    for _ in range(args.repeats):
        for name, runner in CONTENDERS:
            samples[name].append(once(runner, chunks))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    sdk = medians["openai SDK (reference)"]
    print(f"{args.chunks} content chunks, median of {args.repeats} rounds\n")
    print("| path | µs per chunk | min | max | vs openai SDK |")
    print("|---|---:|---:|---:|---:|")
    for name, values in samples.items():
        micros = medians[name]
        print(
            f"| {name} | {micros:.2f} | {min(values):.2f} | {max(values):.2f} "
            f"| {micros / sdk:.3f}× |"
        )
    ours = medians["chatrelay client+engine"]
    verdict = "meets" if ours <= sdk / 8 else "MISSES"
    ratio = sdk / ours
    print(f"\nchatrelay client+engine costs 1/{ratio:.1f} of the SDK per chunk ({verdict} 1/8).")
    core, floor = medians["chatrelay core (no HTTP)"], medians["bare json.loads loop"]
    verdict = "meets" if core <= floor / 2 else "MISSES"
    print(f"chatrelay core costs {core / floor:.2f}× the bare json.loads loop ({verdict} ≤ 0.5×).")


if __name__ == "__main__":
    main()
