"""Every Redis key and channel name chatrelay uses, in one place.

All names start with one prefix (``REDIS_PREFIX``, default ``chatrelay:``) so
several bots, or a test run, can share a Redis without touching each other's
data; cleaning up means deleting ``prefix*`` and nothing else. Parts that come
from outside (platform ids, scopes) are escaped so that a ``:`` inside an id
can't make two different things share a key.

On a Redis Cluster (``Keys(prefix, cluster=True)``) a script or transaction may
only touch keys of one hash slot, so every group of keys used together carries
one hash tag (the part in ``{}``, which alone decides the slot):

* a conversation: its history, lock, lock queue and waiters, hand-off and
  ``/reset`` mark are tagged with the conversation's id, so each conversation
  lives in one slot and different conversations spread over all of them;
* a rate-limit scope: its hash and its log share the scope as tag, so each
  scope (a channel's ``chat.update``, a Discord route) has its own slot;
* the in-flight registry is split into ``INFLIGHT_PARTITIONS`` groups of four
  keys (beats, records, tries, done) tagged ``platform.N``; a reply's group is
  chosen by its id (``inflight_partition``), so heartbeats spread over
  several slots instead of one;
* everything else is one key per operation, and its slot is its own.

On a single Redis the tags are left out, so an upgrade keeps every key where an
earlier version wrote it (a rolling deploy shares locks and in-flight records
between old and new replicas). ``tests/state/test_keys.py`` checks that every
multi-key operation's keys hash to one slot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DEFAULT_PREFIX = "chatrelay:"

INFLIGHT_PARTITIONS = 16
"""Groups the in-flight registry is split into on a cluster: with 16 the
heartbeats of a busy platform land on up to 16 slots (and so on every master
of a small cluster); each sweep claims from all of them in one pipeline."""


def escape(part: str) -> str:
    """Make ``part`` safe as one ``:``-separated component (reversibly); braces
    too, so an id can never open a hash tag of its own."""
    return part.replace("%", "%25").replace(":", "%3A").replace("{", "%7B").replace("}", "%7D")


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation happens: one thread (Slack), or one reply chain or
    thread channel (Discord). ``thread`` is empty for a DM or channel without threads."""

    platform: str
    workspace: str
    channel: str
    thread: str = ""

    @property
    def id(self) -> str:
        parts = (self.platform, self.workspace, self.channel, self.thread)
        return ":".join(escape(part) for part in parts)


class Keys:
    def __init__(self, prefix: str = DEFAULT_PREFIX, *, cluster: bool = False) -> None:
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        if cluster and ("{" in prefix or "}" in prefix):
            # A brace in the prefix would be every key's hash tag: one slot for all.
            raise ValueError("on a Redis Cluster the key prefix must not contain a brace ({ or })")
        self.prefix = prefix
        self.cluster = cluster
        self.inflight_partitions = INFLIGHT_PARTITIONS if cluster else 1

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _tag(self, part: str) -> str:
        """``part`` as the key's hash tag on a cluster; as it is on a single Redis."""
        return "{" + part + "}" if self.cluster else part

    def conversation(self, conversation: ConversationKey) -> str:
        return self._key("conv", self._tag(conversation.id))

    def bucket(self, scope: str) -> str:
        # Scopes are our own names (``slack:T1:chat.update``), readable as they are.
        return self._key("bucket", self._tag(scope))

    def bucket_log(self, scope: str) -> str:
        """A window scope's log of call times, in the scope's slot. ``#`` is in no
        scope name, so no scope's hash can be another's log."""
        return self.bucket(scope) + "#log"

    def dedupe(self, event_id: str) -> str:
        return self._key("seen", escape(event_id))

    def lock(self, conversation: ConversationKey) -> str:
        return self._key("lock", self._tag(conversation.id))

    def lock_queue(self, conversation: ConversationKey) -> str:
        return self._key("lockq", self._tag(conversation.id))

    def lock_waiters(self, conversation: ConversationKey) -> str:
        return self._key("lockw", self._tag(conversation.id))

    def handoff(self, conversation: ConversationKey) -> str:
        return self._key("handoff", self._tag(conversation.id))

    def cancel_channel(self) -> str:
        return self._key("cancel")

    def cancel_marker(self, reply_id: str) -> str:
        return self._key("cancelled", escape(reply_id))

    def inflight_partition(self, reply_id: str) -> int:
        """The in-flight group a reply's keys live in (always 0 on a single Redis)."""
        if self.inflight_partitions == 1:
            return 0
        return zlib.crc32(reply_id.encode()) % self.inflight_partitions

    def _inflight(self, platform: str, partition: int, name: str) -> str:
        if not self.cluster:
            return self._key("inflight", escape(platform), name)
        return self._key("inflight", self._tag(f"{escape(platform)}.{partition}"), name)

    def inflight_beats(self, platform: str, partition: int = 0) -> str:
        return self._inflight(platform, partition, "beats")

    def inflight_records(self, platform: str, partition: int = 0) -> str:
        return self._inflight(platform, partition, "records")

    def inflight_tries(self, platform: str, partition: int = 0) -> str:
        return self._inflight(platform, partition, "tries")

    def inflight_done(self, platform: str, partition: int = 0) -> str:
        return self._inflight(platform, partition, "done")

    def usage(self, kind: str, who: str, day: str) -> str:
        return self._key("usage", kind, escape(who), day)

    def deferred(self, platform: str, partition: str) -> str:
        return self._key("deferred", escape(platform), escape(partition))

    def last_seen(self, platform: str, partition: str) -> str:
        return self._key("lastseen", escape(platform), escape(partition))

    def learned_limits(self, platform: str) -> str:
        """Rate limits learnt from a platform's headers (``core.state.learned``)."""
        return self._key("learned", escape(platform))

    def invalid_requests(self, platform: str) -> str:
        """Invalid requests (Discord: 401, 403, 429) counted in time slots
        (``core.state.invalid``)."""
        return self._key("invalid", escape(platform))

    def chain(self, platform: str, message_id: str) -> str:
        # ``<platform>:chain:<id>``, platform first unlike the others: the layout the
        # Discord adapter wrote before the index moved here, so an upgrade keeps the
        # reply chains it knew instead of reading them all back from Discord.
        return self._key(escape(platform), "chain", escape(message_id))

    # Marks an adapter keeps for itself. Like ``chain``, platform first: the layout
    # the adapters wrote before their keys moved here, so an upgrade keeps them.

    def reset_mark(self, conversation: ConversationKey) -> str:
        """Where ``/reset`` was last used in a conversation (``core.state.resets``)."""
        return self._key(escape(conversation.platform), "reset", self._tag(conversation.id))

    def model_choice(self, platform: str, channel: str) -> str:
        """The model chosen for a channel (``core.state.choices``)."""
        return self._key(escape(platform), "model", escape(channel))

    def greeted(self, platform: str, workspace: str, user: str) -> str:
        """A user was greeted lately (``core.state.greetings``)."""
        return self._key(escape(platform), "greeted", escape(workspace), escape(user))

    def missing_feature(self, platform: str, workspace: str, feature: str) -> str:
        """A workspace lacks a platform feature (``core.state.features``)."""
        return self._key(escape(platform), f"no-{escape(feature)}", escape(workspace))
