"""Key names: one prefix for everything, and ids that can't collide."""

from __future__ import annotations

import pytest

from core.state.keys import ConversationKey, Keys, escape


def test_every_name_starts_with_the_prefix() -> None:
    keys = Keys("bot2:")
    conversation = ConversationKey("slack", "T1", "C1", "1700.1")
    names = [
        keys.conversation(conversation),
        keys.bucket("slack:T1:chat.update"),
        keys.dedupe("slack:Ev1"),
        keys.lock(conversation),
        keys.lock_queue(conversation),
        keys.lock_waiters(conversation),
        keys.handoff(conversation),
        keys.cancel_channel(),
        keys.cancel_marker("r1"),
        keys.inflight_beats("slack"),
        keys.inflight_records("slack"),
        keys.inflight_tries("slack"),
        keys.usage("user", "slack:T1:U1", "2025-03-01"),
    ]
    assert all(name.startswith("bot2:") for name in names)
    assert len(set(names)) == len(names)


def test_parts_with_colons_are_escaped_reversibly() -> None:
    assert escape("a:b%c") == "a%3Ab%25c"
    assert ConversationKey("discord", "g:1", "c").id != ConversationKey("discord", "g", "1:c").id
    assert ConversationKey("slack", "T1", "C1").id == "slack:T1:C1:"


def test_an_empty_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Keys("")
