"""One reply to one message of a conversation, with the state replicas share.

Every adapter answers a message the same way; only the sink and the ids
differ. So the order of things lives here, tested once:

1. quota check (a polite refusal is shown through the same sink);
2. the conversation lock (a newer message waits its turn, ``core.state.locks``);
3. the user's turn is stored and the model's context built in one step;
4. the reply streams, stoppable from any replica (``core.state.cancel``) and
   recorded in flight so a replica that dies has its reply finalised;
5. the answer is stored and the tokens counted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from core.engine import Reply, ReplyResult
from core.llm.client import LLMClient
from core.llm.events import Event, Finish, TextDelta
from core.pacing import Pacing
from core.sink import Sink
from core.state.conversations import Turn
from core.state.inflight import InflightRecord, Tracker
from core.state.keys import ConversationKey
from core.state.store import State

log = logging.getLogger(__name__)

BUSY_TEXT = (
    "I'm still answering an earlier message in this conversation; "
    "please send yours again in a moment."
)


@dataclass(frozen=True)
class ReplyRequest:
    """A message that deserves a reply, in platform-neutral terms."""

    platform: str
    conversation: ConversationKey
    author: str
    text: str
    channel: str
    system_prompt: str
    model: str | None = None
    target: Mapping[str, str] = field(default_factory=dict)
    """The platform's ids for where the reply goes, for the in-flight record."""


SinkFactory = Callable[[str, "ReplyHooks"], Sink]
"""Makes the reply's sink from its id (for Stop buttons) and the hooks it reports to."""


class ReplyHooks:
    """What a sink tells the responder while it writes, and what it may ask of it."""

    def __init__(self) -> None:
        self.reply: Reply | None = None
        self.tracker: Tracker | None = None

    def stop(self) -> None:
        """The platform said the user stopped the reply (e.g. Slack's own Stop)."""
        if self.reply is not None:
            self.reply.stop()

    async def shown(self, index: int, target: Mapping[str, str], text: str) -> None:
        """Message ``index`` (at ``target``) now shows ``text``: keep the in-flight
        record current, so a finaliser can show what the user saw."""
        if self.tracker is not None:
            await self.tracker.update(text=text, index=index, target=target)


class Responder:
    def __init__(self, state: State, llm: LLMClient, *, pacing: Pacing | None = None) -> None:
        self.state = state
        self.llm = llm
        self.pacing = pacing or Pacing()

    async def respond(self, request: ReplyRequest, make_sink: SinkFactory) -> ReplyResult:
        state = self.state
        reply_id = uuid.uuid4().hex
        hooks = ReplyHooks()
        quota = await state.usage.check(user=request.author, channel=request.channel)
        if not quota.allowed:
            return await self._say(make_sink(reply_id, hooks), quota.message or "Quota reached.")
        lease = await state.locks.acquire(request.conversation)
        if lease is None:
            return await self._say(make_sink(reply_id, hooks), BUSY_TEXT)
        async with lease:
            messages = await state.conversations.context(
                request.conversation,
                request.system_prompt,
                Turn("user", request.author, request.text),
            )
            sink = make_sink(reply_id, hooks)
            reply = Reply(sink, budget=state.budget, pacing=self.pacing)
            hooks.reply = reply
            record = InflightRecord(reply_id, request.platform, dict(request.target))
            extra = {"model": request.model} if request.model else None
            async with (
                state.cancel.watching(reply_id, reply),
                state.inflight.track(record) as tracker,
            ):
                hooks.tracker = tracker
                result = await reply.run(self.llm.stream(messages, extra=extra))
            if result.text:
                await state.conversations.append(
                    request.conversation, Turn("assistant", None, result.text)
                )
            if result.usage is not None:
                await state.usage.record(
                    user=request.author, channel=request.channel, usage=result.usage
                )
        log.info(
            "reply %s %s: %d chars, %d messages, %d platform calls",
            reply_id,
            result.outcome.state,
            len(result.text),
            result.messages,
            result.stats.updates,
        )
        return result

    async def _say(self, sink: Sink, text: str) -> ReplyResult:
        """Show a fixed text through the sink, as a reply that is not stored."""
        return await Reply(sink, budget=self.state.budget, pacing=self.pacing).run(_canned(text))


async def _canned(text: str) -> AsyncIterator[Event]:
    yield TextDelta(text)
    yield Finish("stop")
