"""A rate budget on a loaded process: many acquires whose Redis bounds expire in
the same turn of the event loop (a saturated process, or a paused server) all
fall back to the local budget; none fails. Found by bench/production.py at
2,000 replies: the first expiry cut the others short by rescheduling their
deadlines, and one already expiring raised RuntimeError out of the reply."""

from __future__ import annotations

import asyncio

from core.reply.budget import Limit, LimitTable
from core.state.buckets import RedisBudget
from core.state.connection import connect
from core.state.keys import Keys
from tests.state.pausable import PausableRedis


async def test_bounds_expiring_together_all_fall_back_without_an_error(
    pausable: PausableRedis, keys: Keys
) -> None:
    client = connect(pausable.url)
    limits = LimitTable({"s": Limit(1000, 1, burst=1000)})  # never makes anyone wait
    budget = RedisBudget(client, keys, limits, retry_interval=0.05, timeout=0.2)
    try:
        await budget.acquire("s")
        with pausable.paused():
            # 200 acquires started in one turn: their bounds expire in one turn too.
            results = await asyncio.gather(
                *(budget.acquire("s") for _ in range(200)), return_exceptions=True
            )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        assert budget.degraded
    finally:
        await budget.aclose()
        await client.aclose()
