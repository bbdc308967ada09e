"""``open_state`` wires every piece from the settings, on the same Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from core.state.conversations import Turn
from core.state.keys import ConversationKey, Keys
from core.state.settings import StateSettings
from core.state.store import open_state
from core.state.topology import Topology
from tests.state.conftest import state_settings


class Stops:
    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    def stop(self, state: str = "stopped", reason: str | None = None) -> None:
        self.stopped.set()


async def test_open_state_builds_everything_from_settings(
    redis: Redis, topology: Topology, keys: Keys
) -> None:
    settings = StateSettings(
        **state_settings(topology, redis_prefix=keys.prefix, context_tokens=500, rate_limits={})
    )
    conversation = ConversationKey("slack", "T1", "C1")
    async with open_state(settings) as state:
        assert state.keys.prefix == keys.prefix
        assert state.conversations.context_tokens == 500
        await state.conversations.append(conversation, Turn("user", "U1", "hi"))
        assert await state.dedupe.claim("slack:Ev1")
        assert await state.budget.acquire("slack:T1:chat.update") >= 0
        lease = await state.locks.acquire(conversation, wait=0)
        assert lease is not None and await lease.release()
        target = Stops()
        async with state.cancel.watching("r1", target):
            await state.cancel.cancel("r1")
            await asyncio.wait_for(target.stopped.wait(), 1.0)
        # The adapters' marks, one store each for the whole process.
        await state.handoffs.hand_over(conversation, quiet_minutes=1)
        await state.resets.mark(conversation, "9")
        await state.choices.choose("discord", "C1", "m")
        assert await state.greetings.claim("slack", "T1", "U1", every=60)
        await state.missing_features.note("slack", "T1", "native", ttl=60)
        await state.chains.remember(conversation, "M1")
        assert state.chains.ttl == state.resets.ttl == settings.conversation_ttl
        assert state.learned_limits("discord", ttl=5).ttl == 5
        assert await state.invalid_requests("discord").count() == 0
    # Everything went to the configured Redis, under the configured prefix.
    assert await redis.exists(keys.conversation(conversation)) == 1
    assert await redis.exists(keys.dedupe("slack:Ev1")) == 1
    assert await redis.exists(keys.handoff(conversation)) == 1
    assert await redis.get(keys.reset_mark(conversation)) == b"9"
    assert await redis.get(keys.model_choice("discord", "C1")) == b"m"
    assert await redis.exists(keys.greeted("slack", "T1", "U1")) == 1
    assert await redis.exists(keys.missing_feature("slack", "T1", "native")) == 1
    assert await redis.exists(keys.chain("slack", "M1")) == 1
