"""Key names: one prefix for everything, and ids that can't collide."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

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


def test_a_single_redis_keeps_the_layout_earlier_versions_wrote() -> None:
    """An upgrade (a rolling deploy: old and new replicas side by side) must find
    the locks, conversations and in-flight records the old version wrote."""
    keys = Keys("chatrelay:")
    conversation = ConversationKey("slack", "T1", "C1", "1700.1")
    assert keys.conversation(conversation) == "chatrelay:conv:slack:T1:C1:1700.1"
    assert keys.lock(conversation) == "chatrelay:lock:slack:T1:C1:1700.1"
    assert keys.lock_queue(conversation) == "chatrelay:lockq:slack:T1:C1:1700.1"
    assert keys.lock_waiters(conversation) == "chatrelay:lockw:slack:T1:C1:1700.1"
    assert keys.handoff(conversation) == "chatrelay:handoff:slack:T1:C1:1700.1"
    assert keys.reset_mark(conversation) == "chatrelay:slack:reset:slack:T1:C1:1700.1"
    assert keys.bucket("slack:T1:chat.update") == "chatrelay:bucket:slack:T1:chat.update"
    assert keys.bucket_log("s") == "chatrelay:bucket:s#log"
    assert keys.inflight_beats("slack") == "chatrelay:inflight:slack:beats"
    assert keys.inflight_partitions == 1
    assert {keys.inflight_partition(f"r{i}") for i in range(50)} == {0}


CLUSTER = Keys("chatrelay:", cluster=True)
CONVERSATIONS = [ConversationKey("slack", "T1", f"C{i}", f"17{i}.5") for i in range(40)]


def _groups() -> list[list[str]]:
    """Every set of keys one script or transaction touches together (the
    callers: locks, conversations, handoff, buckets, in-flight registry)."""
    keys = CLUSTER
    groups = [
        [
            keys.conversation(c),
            keys.lock(c),
            keys.lock_queue(c),
            keys.lock_waiters(c),
            keys.handoff(c),
            keys.reset_mark(c),
        ]
        for c in CONVERSATIONS
    ]
    groups += [[keys.bucket(s), keys.bucket_log(s)] for s in ("slack:T1:chat.update", "d:{x}")]
    for partition in range(keys.inflight_partitions):
        groups.append(
            [
                keys.inflight_beats("slack", partition),
                keys.inflight_records("slack", partition),
                keys.inflight_tries("slack", partition),
                keys.inflight_done("slack", partition),
            ]
        )
    return groups


def test_on_a_cluster_every_multi_key_operation_hashes_to_one_slot() -> None:
    for group in _groups():
        assert len({key_slot(key.encode()) for key in group}) == 1, group


def test_on_a_cluster_hot_keys_spread_over_the_slots_of_every_master() -> None:
    """Three masters split the slots in thirds (``redis-cli --cluster create``):
    conversations, scopes and the in-flight partitions must not share one."""
    thirds = {
        "conversations": {key_slot(CLUSTER.lock(c).encode()) * 3 // 16384 for c in CONVERSATIONS},
        "scopes": {
            key_slot(CLUSTER.bucket(f"slack:T1:C{i}:chat.update").encode()) * 3 // 16384
            for i in range(40)
        },
        "in-flight partitions": {
            key_slot(CLUSTER.inflight_beats("slack", p).encode()) * 3 // 16384
            for p in range(CLUSTER.inflight_partitions)
        },
    }
    assert all(found == {0, 1, 2} for found in thirds.values()), thirds
    replies = {CLUSTER.inflight_partition(f"reply-{i}") for i in range(400)}
    assert replies == set(range(CLUSTER.inflight_partitions))


def test_an_id_cannot_open_a_hash_tag_of_its_own() -> None:
    odd = ConversationKey("slack", "T{1}", "C", "")
    assert CLUSTER.lock(odd).count("{") == 1
    with pytest.raises(ValueError, match="brace"):
        Keys("bot{1}:", cluster=True)
