"""A Slack message handed over to another process.

A process that drains has acknowledged every event it got, and claimed it in
dedupe: Slack won't send it again. So a message it can no longer answer is
left in Redis (``core.service.Responder.hand_over``) with this payload, and
the next Slack process that is alive answers it (``answer_handed_over``, run by
``core.state.deferred``'s pickup). The payload says everything the reply needs
that is not in the rules: another version of chatrelay may read it, so it is
versioned, and one of an unknown version is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.rules import RulesSource
from core.service import Incoming
from core.state import ConversationKey, DeferredRequest

if TYPE_CHECKING:
    from bots.slack.replies import Replies

log = logging.getLogger(__name__)

HANDOVER_VERSION = 1
"""Of the hand-over payload: a process that reads another one drops it."""

EVENT_FIELDS = ("user", "ts", "channel_type")
"""What of the Slack event a reply needs: its author, where it is, whether a DM."""


def payload(incoming: Incoming, event: Mapping[str, Any]) -> dict[str, Any]:
    """What another process needs to answer ``incoming`` (from ``event``)."""
    conversation = incoming.conversation
    return {
        "v": HANDOVER_VERSION,
        "team": conversation.workspace,
        "channel": incoming.channel,
        "thread_ts": conversation.thread,
        "text": incoming.text,
        "conversation": [
            conversation.platform,
            conversation.workspace,
            conversation.channel,
            conversation.thread,
        ],
        "event": {k: event[k] for k in EVENT_FIELDS if k in event},
    }


def incoming_of(
    handed: Mapping[str, Any], rules: RulesSource
) -> tuple[Incoming, dict[str, Any]] | None:
    """The message and its event from a payload, as intake would have made them;
    None for a payload of another version. Intake's decision was taken already
    (the message was claimed and deserved a reply): the channel's rules are read
    again, as a reply reads them when it starts."""
    if handed.get("v") != HANDOVER_VERSION:
        return None
    platform, workspace, channel, thread = handed["conversation"]
    event = dict(handed["event"])
    incoming = Incoming(
        platform="slack",
        message_id=str(event.get("ts", "")),
        conversation=ConversationKey(platform, workspace, channel, thread),
        channel=str(handed["channel"]),
        author=str(event.get("user", "")),
        text=str(handed["text"]),
        policy=rules.policy("slack", str(handed["channel"])),
        named=False,
        continuing=thread != event.get("ts"),
    )
    return incoming, event


async def answer_handed_over(
    deferred: DeferredRequest, rules: RulesSource, replies: Replies
) -> None:
    """Answer a message a draining process accepted and handed over."""
    found = incoming_of(deferred.payload, rules)
    if found is None:
        log.warning("dropping a handed-over Slack message of unknown version")
        return
    incoming, event = found
    await replies.answer(incoming, event)
