"""Which messages get a reply: the intake rules every adapter follows.

An adapter knows its platform's events (who wrote, where, whether the bot was
named); what happens next is the same everywhere and lives here once:

1. **Dedupe**: the first process to claim a message answers it; a retried
   delivery, a second replica's copy or a gateway resume drops it.
2. **Human handoff** in auto-reply channels: when a human agent writes in a
   conversation, the bot stays quiet there for the channel's quiet time; an
   agent naming the bot with ``resume`` brings it back. A customer's message
   in a conversation an agent has is left to the agent, even one naming the
   bot.
3. **Request defaults**: the channel's system prompt and model, else the
   service's.

The adapter supplies only what is platform-specific: whether the author is an
agent (user ids, Slack user groups, Discord roles), and what to do with the
verdict (post "I'm back", start the reply).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.rules import RESUME_COMMAND, ChannelPolicy
from core.service.responder import ReplyRequest
from core.state.connection import REDIS_FAILURES
from core.state.keys import ConversationKey
from core.state.store import State

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "(empty message)"
"""What the model is given for a message with no text (an attachment only)."""

BACK_TEXT = "I'm back in this thread."
"""What the bot says when an agent hands a conversation back with ``resume``."""


class Verdict(enum.Enum):
    """What becomes of a message, decided before any platform call."""

    REPLY = "reply"  # answer it
    RESUMED = "resumed"  # an agent handed the conversation back: say so
    IGNORED = "ignored"  # not the bot's to answer (an agent has it, or is the author)
    DEDUPLICATED = "deduplicated"  # another process or an earlier delivery has it
    FAILED = "failed"  # the handoff could not be recorded (Redis)


@dataclass(frozen=True)
class Incoming:
    """A message that may deserve a reply, in platform-neutral terms; the adapter
    has already dropped what is never for the bot (its own messages, other
    bots, blocked users, edits)."""

    platform: str
    message_id: str
    """Unique per platform; the dedupe claim is ``platform:message_id``."""
    conversation: ConversationKey
    channel: str
    author: str
    text: str
    """The author's words, without the mention that named the bot."""
    policy: ChannelPolicy
    named: bool
    """The author named the bot (a mention): in a conversation an agent has, only
    an agent's ``resume`` is acted on."""
    continuing: bool
    """The message continues a conversation (a thread, a reply chain) rather than
    starting one: only there can an agent have taken over."""


AgentCheck = Callable[[], Awaitable[bool]]
"""Whether the message's author is a human agent of its channel; asked only in
auto-reply channels (it may cost a platform call, e.g. a user group's members)."""


class IntakePolicy:
    def __init__(self, state: State, system_prompt: str) -> None:
        self.state = state
        self.system_prompt = system_prompt

    async def decide(self, incoming: Incoming, is_agent: AgentCheck) -> Verdict:
        """Claim the message, then apply the handoff rules of its channel."""
        if not await self.state.dedupe.claim(f"{incoming.platform}:{incoming.message_id}"):
            return Verdict.DEDUPLICATED
        if incoming.policy.mode != "auto":
            return Verdict.REPLY
        conversation = incoming.conversation
        if incoming.named:
            if not incoming.continuing:
                return Verdict.REPLY  # a new conversation: nobody has it yet
            if incoming.text.strip().lower() == RESUME_COMMAND and await is_agent():
                try:
                    await self.state.handoffs.resume(conversation)
                except REDIS_FAILURES as exc:
                    log.warning("could not hand a conversation back to the bot: %s", exc)
                    return Verdict.FAILED
                return Verdict.RESUMED
            # Asked by name where an agent has it: when Redis can't say, answer.
            if await self._handed_over(conversation, default=False):
                return Verdict.IGNORED
            return Verdict.REPLY
        if await is_agent():
            if incoming.continuing:
                try:
                    await self.state.handoffs.hand_over(
                        conversation, incoming.policy.handoff_quiet_minutes
                    )
                except REDIS_FAILURES as exc:
                    log.warning("could not record an agent taking over a conversation: %s", exc)
            return Verdict.IGNORED
        # Without Redis: quiet where an agent may have taken over, answer a new one.
        if await self._handed_over(conversation, default=incoming.continuing):
            return Verdict.IGNORED
        return Verdict.REPLY

    def request(
        self,
        incoming: Incoming,
        *,
        model: str | None = None,
        target: Mapping[str, str] | None = None,
        handover: Mapping[str, Any] | None = None,
        partition: str = "",
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> ReplyRequest:
        """The reply request for ``incoming``: the channel's prompt and model unless
        ``model`` (a user's choice) overrides it."""
        return ReplyRequest(
            platform=incoming.platform,
            conversation=incoming.conversation,
            author=incoming.author,
            text=incoming.text or EMPTY_MESSAGE,
            channel=incoming.channel,
            system_prompt=incoming.policy.system_prompt or self.system_prompt,
            model=model or incoming.policy.model,
            target=dict(target or {}),
            handover=dict(handover or {}),
            partition=partition,
            prepare=prepare,
        )

    async def _handed_over(self, conversation: ConversationKey, *, default: bool) -> bool:
        """Whether a human agent has the conversation; ``default`` when Redis can't say."""
        try:
            return await self.state.handoffs.is_handed_over(conversation)
        except REDIS_FAILURES as exc:
            log.warning("could not tell whether an agent has the conversation: %s", exc)
            return default
