"""Every Redis key and channel name chatrelay uses, in one place.

All names start with one prefix (``REDIS_PREFIX``, default ``chatrelay:``) so
several bots, or a test run, can share a Redis without touching each other's
data; cleaning up means deleting ``prefix*`` and nothing else. Parts that come
from outside (platform ids, scopes) are escaped so that a ``:`` inside an id
can't make two different things share a key.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "chatrelay:"


def escape(part: str) -> str:
    """Make ``part`` safe as one ``:``-separated component (reversibly)."""
    return part.replace("%", "%25").replace(":", "%3A")


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
    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        self.prefix = prefix

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def conversation(self, conversation: ConversationKey) -> str:
        return self._key("conv", conversation.id)

    def bucket(self, scope: str) -> str:
        # Scopes are our own names (``slack:T1:chat.update``), readable as they are.
        return self._key("bucket", scope)

    def dedupe(self, event_id: str) -> str:
        return self._key("seen", escape(event_id))

    def lock(self, conversation: ConversationKey) -> str:
        return self._key("lock", conversation.id)

    def lock_queue(self, conversation: ConversationKey) -> str:
        return self._key("lockq", conversation.id)

    def lock_waiters(self, conversation: ConversationKey) -> str:
        return self._key("lockw", conversation.id)

    def handoff(self, conversation: ConversationKey) -> str:
        return self._key("handoff", conversation.id)

    def cancel_channel(self) -> str:
        return self._key("cancel")

    def cancel_marker(self, reply_id: str) -> str:
        return self._key("cancelled", escape(reply_id))

    def inflight_beats(self, platform: str) -> str:
        return self._key("inflight", escape(platform), "beats")

    def inflight_records(self, platform: str) -> str:
        return self._key("inflight", escape(platform), "records")

    def inflight_tries(self, platform: str) -> str:
        return self._key("inflight", escape(platform), "tries")

    def inflight_done(self, platform: str) -> str:
        return self._key("inflight", escape(platform), "done")

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
        return self._key(escape(conversation.platform), "reset", conversation.id)

    def model_choice(self, platform: str, channel: str) -> str:
        """The model chosen for a channel (``core.state.choices``)."""
        return self._key(escape(platform), "model", escape(channel))

    def greeted(self, platform: str, workspace: str, user: str) -> str:
        """A user was greeted lately (``core.state.greetings``)."""
        return self._key(escape(platform), "greeted", escape(workspace), escape(user))

    def missing_feature(self, platform: str, workspace: str, feature: str) -> str:
        """A workspace lacks a platform feature (``core.state.features``)."""
        return self._key(escape(platform), f"no-{escape(feature)}", escape(workspace))
