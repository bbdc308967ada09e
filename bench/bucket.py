"""Cost of the shared Redis budget: acquire throughput and latency, and what it
adds to each platform update compared with the in-process ``LocalBudget``.

Every platform call a reply makes first acquires its scopes, so the budget's
cost is paid once per update (about once a second per reply), not per token.
The limit used here is far above what the budget can reach (10⁶/s), so no call
waits for a slot and only the mechanism is measured: one Lua script round trip
(GCRA reserve) per acquire.

Targets: the embedded redis-server on a unix socket (what a single machine
without ``REDIS_URL`` runs), and ``REDIS_URL`` too when it is set (or
``--url``), e.g. the machine's Redis over TCP on 127.0.0.1.

Run: ``python -m bench.bucket`` (``--seconds`` per row). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from core.reply.budget import Budget, Limit, LimitTable, LocalBudget
from core.state.buckets import RedisBudget
from core.state.connection import Topology, open_redis, redact
from core.state.keys import Keys
from core.state.topology import RedisClient

SCOPE = "bench:T1:chat.update"
LIMITS = LimitTable({SCOPE: Limit(1_000_000, 1)})
CONCURRENCY = (1, 8, 64)


def quantiles_us(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``latencies`` (seconds), in µs."""
    if len(latencies) < 2:
        return (latencies[0] * 1e6,) * 2 if latencies else (0.0, 0.0)
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1e6, q[98] * 1e6


async def timed(
    operation: Callable[[], Awaitable[None]], callers: int, seconds: float
) -> tuple[float, float, float]:
    """Operations per second and p50 / p99 µs of ``operation()``, by ``callers`` at once."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def caller() -> None:
        clock = time.perf_counter
        while clock() < end:
            start = clock()
            await operation()
            latencies.append(clock() - start)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    rate = len(latencies) / (time.perf_counter() - started)
    return (rate, *quantiles_us(latencies))


async def run(budget: Budget, tasks: int, seconds: float) -> tuple[float, float, float]:
    """Acquires per second, and p50 / p99 latency in µs, with ``tasks`` callers."""

    async def acquire() -> None:
        await budget.acquire(SCOPE)

    return await timed(acquire, tasks, seconds)


async def bench_redis(redis: RedisClient, seconds: float) -> list[tuple[int, float, float, float]]:
    keys = Keys(f"chatrelay-bench:{uuid.uuid4().hex[:8]}:")
    budget = RedisBudget(redis, keys, LIMITS)
    await run(budget, 1, 0.2)  # warm up: connection, script cache
    rows = [(tasks, *await run(budget, tasks, seconds)) for tasks in CONCURRENCY]
    assert not budget.degraded, "Redis went away during the benchmark"
    await redis.delete(keys.bucket(SCOPE))
    await budget.aclose()
    return rows


async def main_async(url: str | None, seconds: float) -> None:
    local = LocalBudget(LIMITS)
    await run(local, 1, 0.2)
    # One caller: an acquire that needn't wait never yields, so more would run in turn.
    local_rows = [(1, *await run(local, 1, seconds))]
    targets: list[tuple[str, str | None]] = [("embedded, unix socket", None)]
    if url:
        targets.append((f"REDIS_URL ({redact(url)})", url))
    results: list[tuple[str, list[tuple[int, float, float, float]]]] = []
    for name, target in targets:
        with tempfile.TemporaryDirectory(prefix="crb") as state_dir:
            async with open_redis(Topology(target), Path(state_dir)) as redis:
                results.append((name, await bench_redis(redis, seconds)))

    print(f"{seconds:g} s per row; limit far above the rate reached, so nothing waits\n")
    print("| budget | callers | acquires/s | p50 µs | p99 µs |")
    print("|---|---:|---:|---:|---:|")
    for tasks, rate, p50, p99 in local_rows:
        print(f"| LocalBudget (in process) | {tasks} | {rate:,.0f} | {p50:.1f} | {p99:.1f} |")
    for name, rows in results:
        for tasks, rate, p50, p99 in rows:
            print(f"| RedisBudget, {name} | {tasks} | {rate:,.0f} | {p50:.1f} | {p99:.1f} |")
    local_p50 = local_rows[0][2]
    print()
    for name, rows in results:
        added = rows[0][2] - local_p50
        print(f"- added per platform update ({name}, one caller, p50): {added:.0f} µs")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each row")
    parser.add_argument("--url", default=os.environ.get("REDIS_URL"), help="a Redis to measure")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.url or None, args.seconds))


if __name__ == "__main__":
    main()
