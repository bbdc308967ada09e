"""The drain waits for messages still being decided on, not only for replies."""

from __future__ import annotations

import asyncio

from core.clock import MonotonicClock
from core.reply import Reply
from core.service.lifecycle import ActiveReplies
from tests.fakes.recording_sink import RecordingSink


async def turns(count: int = 5) -> None:
    """Let every ready task run ``count`` times: a drain that has nothing to wait
    for ends at its first turn (waiting for a set event does not suspend), so
    whether it ended is decided by turns of the loop, not by time."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_the_drain_waits_for_a_message_being_decided_on() -> None:
    """A claimed message must be answered or handed over before the process lets
    go of it: the drain returns only once its handling is done."""
    active = ActiveReplies()
    decided = asyncio.Event()
    order: list[str] = []

    async def handle() -> None:
        with active.handling():
            await decided.wait()
            order.append("handed over")

    handling = asyncio.create_task(handle())
    await asyncio.sleep(0)
    draining = asyncio.create_task(active.drain(5.0))
    await turns()
    assert not draining.done() and not active.accepting
    decided.set()
    assert await asyncio.wait_for(draining, 1.0) == 0  # nothing interrupted
    order.append("drained")
    await handling
    assert order == ["handed over", "drained"]


async def test_with_nothing_in_hand_the_drain_is_immediate() -> None:
    active = ActiveReplies()
    with active.handling():
        pass
    assert await asyncio.wait_for(active.drain(5.0), 0.5) == 0


async def test_a_reply_ending_does_not_end_the_wait_for_a_message_being_decided_on() -> None:
    active = ActiveReplies()
    reply = Reply(RecordingSink(MonotonicClock()))
    active.add(reply)
    decided = asyncio.Event()

    async def handle() -> None:
        with active.handling():
            await decided.wait()

    handling = asyncio.create_task(handle())
    await asyncio.sleep(0)
    draining = asyncio.create_task(active.drain(5.0))
    active.discard(reply)  # the reply finished; the message is still being decided on
    await turns()
    assert not draining.done()
    decided.set()
    assert await asyncio.wait_for(draining, 1.0) == 0
    await handling
