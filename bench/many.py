"""Thousands of concurrent replies in one process: CPU per token, memory per reply, staleness.

Each reply streams into its own Discord channel through the real ``Reply``
engine, the shared ``LocalBudget`` with ``DEFAULT_LIMITS`` (``discord:channel:*``
4 per 5 s, burst 2: one update per 1.25 s per reply) and production pacing
(1 s). Unlike ``bench.pacing``, the platform is simulated in process: every
call renders the frame with the Discord adapter's real formatter, then sleeps a
fixed latency. Why: 2,000 replies over HTTP to a fake server in the same
process would measure the fake server's CPU as ours; the platform's limits are
enforced here by the budget alone (so this run says nothing about 429s; the
HTTP scenarios do).

The model is the same in-process generator (absolute schedule), in real time.
Its own cost is measured in a separate pass with a consumer that does nothing,
and reported next to the total so it can be subtracted. Memory is measured in
a third pass under ``tracemalloc`` (which slows everything down, so that pass's
timings are not reported): peak traced memory while all replies are active,
divided by the number of replies.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from bots.cli import platform_limits
from bots.discord.format import render
from core.llm.events import Finish, TextDelta
from core.reply.budget import LimitTable, LocalBudget
from core.reply.engine import Reply, ReplyResult
from core.reply.observe import percentile
from core.reply.pacing import Pacing
from core.reply.sink import Frame, Outcome, SinkCall

DEFAULT_LIMITS = platform_limits()
"""Every adapter's default rate limits, as ``chatrelay run`` has them."""
WORDS = ("stream", "token", "reply", "edit", "budget", "channel")

BUDGET_INTERVAL = 1.25
"""Seconds between updates of one reply allowed by ``discord:channel:*`` (4 per 5 s)."""


class SimulatedDiscord:
    """A channel message: formatted like the adapter does, then ``latency`` seconds."""

    limit = 1900
    append_only = False

    def __init__(self, channel: int, latency: float) -> None:
        self._scopes = (f"discord:channel:{channel}",)
        self._latency = latency

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        return self._scopes

    async def open(self) -> None:
        await asyncio.sleep(self._latency)

    async def render(self, frame: Frame) -> None:
        render(frame.text, mode="content", streaming=not frame.final)
        await asyncio.sleep(self._latency)

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        render(frame.text, mode="content", streaming=False, outcome=outcome)
        await asyncio.sleep(self._latency)


async def tokens(count: int, rate: float, first: float, start: float) -> AsyncIterator[object]:
    loop = asyncio.get_running_loop()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + first + i / rate - loop.time()))
        yield TextDelta(" " + WORDS[i % len(WORDS)])
    yield Finish("stop")


@dataclass
class ManyResult:
    replies: int
    tokens: int
    wall: float
    cpu: float
    model_cpu: float
    stale_p50: float
    stale_p99: float
    peak_bytes_per_reply: float
    correct: int


async def _run_engines(replies: int, count: int, rate: float, latency: float) -> list[ReplyResult]:
    budget = LocalBudget(LimitTable(DEFAULT_LIMITS))
    start = asyncio.get_running_loop().time()
    engines = [
        Reply(SimulatedDiscord(i, latency), budget=budget, pacing=Pacing(min_interval=1.0))
        for i in range(replies)
    ]
    return list(await asyncio.gather(*(e.run(tokens(count, rate, 0.5, start)) for e in engines)))


async def _run_model_only(replies: int, count: int, rate: float) -> None:
    start = asyncio.get_running_loop().time()

    async def drain() -> None:
        async for _ in tokens(count, rate, 0.5, start):
            pass

    await asyncio.gather(*(drain() for _ in range(replies)))


def run_many(replies: int, count: int, rate: float, latency: float = 0.05) -> ManyResult:
    gc.collect()
    cpu0 = time.process_time()
    asyncio.run(_run_model_only(replies, count, rate))
    model_cpu = time.process_time() - cpu0

    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results = asyncio.run(_run_engines(replies, count, rate, latency))
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    stale = [s for r in results for s in r.stats.staleness]
    expected = "".join(" " + WORDS[i % len(WORDS)] for i in range(count))
    # What the sink got is the engine's text (the sink is simulated), so this checks
    # the engine delivered a final frame carrying the whole model text.
    correct = sum(
        1 for r in results if r.outcome.state == "done" and r.delivered and r.text == expected
    )
    del results
    gc.collect()

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    asyncio.run(_run_engines(replies, count, rate, latency))
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()

    return ManyResult(
        replies=replies,
        tokens=replies * count,
        wall=wall,
        cpu=cpu,
        model_cpu=model_cpu,
        stale_p50=percentile(stale, 0.5),
        stale_p99=percentile(stale, 0.99),
        peak_bytes_per_reply=peak / replies,
        correct=correct,
    )


def report(result: ManyResult, count: int, rate: float) -> str:
    per_k = result.cpu / result.tokens * 1000
    model_k = result.model_cpu / result.tokens * 1000
    beyond = result.stale_p99 - BUDGET_INTERVAL
    lines = [
        f"{result.replies} concurrent replies, {count} tokens each at {rate:g} tokens/s, "
        f"one channel each, simulated 50 ms platform calls, real time\n",
        "| figure | measured | target |",
        "|---|---:|---|",
        f"| wall time | {result.wall:.1f} s | |",
        f"| CPU s per 1,000 tokens (all) | {per_k:.4f} | |",
        f"| of which the fake model's generators | {model_k:.4f} | |",
        f"| chatrelay's share per 1,000 tokens | {per_k - model_k:.4f} | |",
        f"| staleness p50 | {result.stale_p50:.2f} s | |",
        f"| staleness p99 | {result.stale_p99:.2f} s "
        f"({beyond:+.2f} s beyond the {BUDGET_INTERVAL} s budget interval) | < 3 s beyond |",
        f"| peak traced memory per active reply | {result.peak_bytes_per_reply / 1024:.1f} KB "
        "| < 100 KB |",
        f"| final text correct | {result.correct / result.replies * 100:.0f} % | 100 % |",
    ]
    return "\n".join(lines)
