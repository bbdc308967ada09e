"""CPU of the model client with thousands of streams open at once: httpx's single
pool against ``core.llm.pool``'s split one.

A fake LLM server (``tests/fakes/llm_server/``) runs in its own process and
answers every request with the same Chat Completions stream: ``--chunks``
content chunks, ``--delay`` seconds apart. In this process, ``--streams``
``LLMClient.stream`` readers start together (in waves of 100 every 10 ms, so
the server's listen backlog is not what is measured) and read to the end, once
with ``--shards 1`` (one httpx pool, the client before the split) and once with
the default number of pools, alternating for ``--rounds``. The figure is this
process's CPU (``time.process_time``) per round, median; every stream must
read the whole text.

Run: ``python -m bench.llm_pool`` (``--streams 2000 --chunks 40 --delay 0.05``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core.llm.client import LLMClient, Timeouts, http_client
from core.llm.events import TextDelta
from core.llm.messages import ChatMessage
from core.llm.pool import SHARDS
from core.llm.provider import Provider

WORD = "token "


async def serve(chunks: int, delay: float) -> None:
    """The fake LLM server, in this process until stdin closes; prints its base URL."""
    from tests.fakes.llm_server import FakeLLMServer, sse_response
    from tests.fakes.streams import chat_stream

    async with FakeLLMServer() as server:
        server.defaults["chat/completions"] = sse_response(
            chat_stream([WORD] * chunks), chunk_delay=delay
        )
        print(server.base_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def one_round(base_url: str, streams: int, chunks: int, shards: int) -> tuple[float, float]:
    """CPU and wall seconds of ``streams`` concurrent streams read to the end."""
    timeouts = Timeouts(connect=30, first_token=60, idle=30)
    http = http_client(timeouts, verify=False, shards=shards)
    client = LLMClient([Provider(base_url, "m")], timeouts=timeouts, http=http)
    expected = WORD * chunks

    async def read() -> None:
        events = client.stream([ChatMessage("user", "hi")])
        text = "".join([e.text async for e in events if type(e) is TextDelta])
        if text != expected:
            raise RuntimeError(f"a stream read {len(text)} characters, not {len(expected)}")

    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    tasks = []
    for start in range(0, streams, 100):
        tasks += [asyncio.create_task(read()) for _ in range(min(100, streams - start))]
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    used = time.process_time() - cpu, time.perf_counter() - wall
    await http.aclose()
    return used


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.chunks, args.delay))
        return
    repo = str(Path(__file__).resolve().parent.parent)
    command = [sys.executable, "-m", "bench.llm_pool", "--serve", "--chunks", str(args.chunks)]
    server = subprocess.Popen(
        [*command, "--delay", str(args.delay)],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    results: dict[int, list[tuple[float, float]]] = {1: [], SHARDS: []}
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        for _ in range(args.rounds):
            for shards in results:
                results[shards].append(
                    asyncio.run(one_round(base_url, args.streams, args.chunks, shards))
                )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    print(
        f"{args.streams:,} concurrent streams of {args.chunks} chunks, {args.delay:g} s apart; "
        f"median of {args.rounds} rounds\n"
    )
    print("| pools | client CPU s (median) | min | max | wall s (median) |")
    print("|---|---:|---:|---:|---:|")
    for shards, runs in results.items():
        cpu = [c for c, _ in runs]
        wall = statistics.median(w for _, w in runs)
        label = "1 (httpx's own pool, as before)" if shards == 1 else f"up to {shards}"
        print(
            f"| {label} | {statistics.median(cpu):.2f} | {min(cpu):.2f} | {max(cpu):.2f} "
            f"| {wall:.1f} |"
        )


if __name__ == "__main__":
    main()
