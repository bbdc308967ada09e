"""Conversation memory against a real Redis, and the context builder."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from core.llm.messages import ChatMessage
from core.state.conversations import (
    MESSAGE_OVERHEAD,
    Conversations,
    Turn,
    build_context,
    estimate_tokens,
    truncate,
)
from core.state.keys import ConversationKey, Keys

THREAD = ConversationKey("slack", "T1", "C1", "1700000000.000100")


def store(redis: Redis, keys: Keys, **options: int) -> Conversations:
    return Conversations(redis, keys, **options)


async def test_turns_keep_role_author_and_order(redis: Redis, keys: Keys) -> None:
    conversations = store(redis, keys)
    await conversations.append(THREAD, Turn("user", "U1", "hi"))
    await conversations.append(THREAD, Turn("assistant", None, "hello!"), Turn("user", "U2", "yo"))
    assert await conversations.history(THREAD) == [
        Turn("user", "U1", "hi"),
        Turn("assistant", None, "hello!"),
        Turn("user", "U2", "yo"),
    ]
    other = ConversationKey("slack", "T1", "C1", "1700000000.000200")
    assert await conversations.history(other) == []


async def test_ids_with_colons_do_not_collide(redis: Redis, keys: Keys) -> None:
    conversations = store(redis, keys)
    a = ConversationKey("discord", "g:1", "c", "")
    b = ConversationKey("discord", "g", "1:c", "")
    await conversations.append(a, Turn("user", "U1", "in a"))
    assert await conversations.history(b) == []


async def test_expiry_is_set_and_refreshed_on_use(redis: Redis, keys: Keys) -> None:
    conversations = store(redis, keys, ttl=3600)
    await conversations.append(THREAD, Turn("user", "U1", "hi"))
    key = keys.conversation(THREAD)
    assert 3590 <= await redis.ttl(key) <= 3600
    await redis.expire(key, 10)
    await conversations.history(THREAD)  # reading is use
    assert await redis.ttl(key) > 3590
    await redis.expire(key, 10)
    await conversations.context(THREAD, "sys", Turn("user", "U1", "again"))
    assert await redis.ttl(key) > 3590


async def test_concurrent_appends_interleave_whole_turns(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    replica_a, replica_b = store(redis, keys), store(second_client, keys)

    async def exchange(conversations: Conversations, n: int) -> None:
        await conversations.append(
            THREAD, Turn("user", f"U{n}", f"question {n}"), Turn("assistant", None, f"answer {n}")
        )

    await asyncio.gather(*(exchange(replica_a if n % 2 else replica_b, n) for n in range(40)))
    turns = await replica_a.history(THREAD)
    assert len(turns) == 80
    for question, answer in zip(turns[::2], turns[1::2], strict=True):
        assert question.author is not None
        assert answer.text == "answer " + question.author[1:]


async def test_old_turns_are_trimmed_beyond_max_turns(redis: Redis, keys: Keys) -> None:
    conversations = store(redis, keys, max_turns=5)
    for n in range(8):
        await conversations.append(THREAD, Turn("user", "U1", str(n)))
    assert [t.text for t in await conversations.history(THREAD)] == ["3", "4", "5", "6", "7"]


async def test_context_is_system_then_history_then_current(redis: Redis, keys: Keys) -> None:
    conversations = store(redis, keys)
    await conversations.append(
        THREAD, Turn("user", "U1", "what is 2+2?"), Turn("assistant", None, "4")
    )
    messages = await conversations.context(THREAD, "be brief", Turn("user", "U2", "and 3+3?"))
    assert messages == [
        ChatMessage("system", "be brief"),
        ChatMessage("user", "what is 2+2?", name="U1"),
        ChatMessage("assistant", "4"),
        ChatMessage("user", "and 3+3?", name="U2"),
    ]
    # The current message is stored: the next context includes it.
    assert (await conversations.history(THREAD))[-1] == Turn("user", "U2", "and 3+3?")


async def test_context_drops_oldest_turns_to_fit_the_budget(redis: Redis, keys: Keys) -> None:
    turn_cost = estimate_tokens("x" * 400) + MESSAGE_OVERHEAD + estimate_tokens("U1")
    system_cost = estimate_tokens("sys") + MESSAGE_OVERHEAD
    budget = system_cost + 4 * turn_cost  # room for the current message and three turns
    conversations = store(redis, keys, context_tokens=budget)
    for n in range(10):
        await conversations.append(THREAD, Turn("user", "U1", f"{n}" + "x" * 399))
    messages = await conversations.context(THREAD, "sys", Turn("user", "U1", "c" + "x" * 399))
    assert [m.content[0] for m in messages] == ["s", "7", "8", "9", "c"]


async def test_system_prompt_and_current_message_survive_any_budget(
    redis: Redis, keys: Keys
) -> None:
    conversations = store(redis, keys, context_tokens=64)
    await conversations.append(THREAD, Turn("user", "U1", "old"))
    long_prompt = "rules " * 200
    question = "a long question " * 100
    messages = await conversations.context(THREAD, long_prompt, Turn("user", "U1", question))
    assert messages == [ChatMessage("system", long_prompt), ChatMessage("user", question, "U1")]


async def test_fifty_kilobyte_message_is_truncated_with_a_marker(redis: Redis, keys: Keys) -> None:
    conversations = store(redis, keys, max_chars=16_000)
    pasted = "log line\n" * 5_700  # 51,300 characters
    messages = await conversations.context(THREAD, "sys", Turn("user", "U1", pasted))
    sent = messages[-1].content
    assert len(sent) <= 16_000
    assert sent.startswith("log line\n")
    assert "[… message truncated: 35,3" in sent
    stored = (await conversations.history(THREAD))[-1].text
    assert stored == sent


def test_truncate_keeps_short_text_and_caps_long_text_exactly() -> None:
    assert truncate("short", 100) == "short"
    for length in (101, 999, 10_000, 100_000):
        cut = truncate("é" * length, 100)
        assert len(cut) <= 100
        omitted = length - cut.index("\n\n[")
        assert f"{omitted:,} more characters" in cut


async def test_undecodable_turns_are_skipped_with_a_log_line(
    redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    conversations = store(redis, keys)
    await conversations.append(THREAD, Turn("user", "U1", "good 1"))
    key = keys.conversation(THREAD)
    await redis.rpush(key, b"\xff\xfe not utf-8", b"{not json", b'{"role": "robot", "text": "x"}')
    await redis.rpush(key, b"[1, 2]", b'{"role": "user", "author": 5, "text": "x"}')
    await conversations.append(THREAD, Turn("assistant", None, "good 2"))
    with caplog.at_level(logging.WARNING, logger="core.state.conversations"):
        turns = await conversations.history(THREAD)
    assert [t.text for t in turns] == ["good 1", "good 2"]
    skipped = [r for r in caplog.records if "skipping undecodable turn" in r.getMessage()]
    assert len(skipped) == 5
    assert THREAD.id in skipped[0].getMessage()


async def test_reset_forgets_one_conversation(redis: Redis, keys: Keys) -> None:
    conversations = store(redis, keys)
    other = ConversationKey("slack", "T1", "C2")
    await conversations.append(THREAD, Turn("user", "U1", "remember me"))
    await conversations.append(other, Turn("user", "U1", "and me"))
    assert await conversations.reset(THREAD) is True
    assert await conversations.history(THREAD) == []
    assert await conversations.reset(THREAD) is False
    assert len(await conversations.history(other)) == 1


def test_names_are_made_acceptable_to_providers() -> None:
    messages = build_context(
        "s", [Turn("user", "user.name@example", "hi")], Turn("user", "x", "q"), 999
    )
    assert messages[1].name == "user_name_example"
    long = build_context("s", [], Turn("user", "u" * 100, "q"), 999)
    assert long[-1].name == "u" * 64


def test_a_cut_never_leaves_an_orphaned_answer_first() -> None:
    history = [Turn("user", "U1", "q" * 400), Turn("assistant", None, "a" * 40)]
    budget = 3 * MESSAGE_OVERHEAD + estimate_tokens("a" * 40) + estimate_tokens("s") + 5
    messages = build_context("s", history, Turn("user", "U1", "next"), budget)
    assert [m.role for m in messages] == ["system", "user"]


def test_estimate_errs_high_for_dense_scripts() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd" * 100) == 100
    assert estimate_tokens("漢字" * 50) == 100  # a token per character
    assert estimate_tokens("🎉") == 1


turns = st.lists(
    st.builds(
        Turn,
        st.sampled_from(["user", "assistant"]),
        st.one_of(st.none(), st.text(min_size=1, max_size=8)),
        st.text(max_size=300),
    ),
    max_size=30,
)


@given(history=turns, current=st.text(max_size=300), budget=st.integers(0, 2000))
def test_context_properties(history: list[Turn], current: str, budget: int) -> None:
    now = Turn("user", "U9", current)
    messages = build_context("system prompt", history, now, budget)
    assert messages[0] == ChatMessage("system", "system prompt")
    assert messages[-1].content == current and messages[-1].role == "user"
    kept = messages[1:-1]
    # What is kept is the newest part of the history, in order.
    tail = [m.content for m in kept]
    assert tail == [t.text for t in history][len(history) - len(kept) :]
    if len(kept) < len(history) and kept:
        assert kept[0].role == "user"
    cost = sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD for m in messages)
    cost += sum(estimate_tokens(m.name) for m in messages if m.name)
    assert cost <= budget or not kept
