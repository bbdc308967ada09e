"""Starting a Slack reply: where it goes, the sink that shows it, its pace.

- It goes in the thread of the message it answers (``bots.slack.conversations``),
  for the person who asked (a stream outside a DM names its recipient).
- Native streaming is tried where the workspace has it. A workspace that
  refused ``chat.startStream`` is remembered for a day (it may gain it), so its
  later replies post and edit from the start instead of each paying a refusal.
- A DM thread (an assistant thread) is titled with its first question.
- A thread the bot has no memory of is read back from Slack under the
  conversation's lock, before the context is built (``Threads.recall``).
- The shared ``Responder`` answers, with Slack's pacing; a process that drains
  hands the message over with ``bots.slack.handover``'s payload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.api import spend
from bots.slack.conversations import Threads
from bots.slack.handover import payload
from bots.slack.settings import SlackSettings
from bots.slack.sink import SlackReplySink, SlackTarget
from core.reply import Pacing, Sink, one_line
from core.service import Incoming, IntakeOutcome, IntakePolicy, Responder, remembers
from core.state import REDIS_FAILURES, State

log = logging.getLogger(__name__)

T = TypeVar("T")

NATIVE_STREAMING = "native"
"""The feature noted in ``State.missing_features`` when a workspace refuses
``chat.startStream``."""
NATIVE_UNSUPPORTED_TTL = 24 * 3600
"""How long a workspace without native streaming is remembered (it may gain it)."""

TITLE_LENGTH = 60
"""Characters of its first question an assistant thread's title shows."""


class Replies:
    def __init__(
        self,
        *,
        settings: SlackSettings,
        client: AsyncWebClient,
        state: State,
        policy: IntakePolicy,
        responder: Responder,
        threads: Threads,
    ) -> None:
        self.settings = settings
        self.client = client
        self.state = state
        self.policy = policy
        self.responder = responder
        self.threads = threads
        self.pacing = Pacing(min_interval=settings.slack_edit_interval)
        """Slack's: the responder is every platform's."""
        self._running: set[asyncio.Future[Any]] = set()

    async def answer(self, incoming: Incoming, event: Mapping[str, Any]) -> IntakeOutcome:
        """Reply to ``incoming`` (from Slack's ``event``) in its thread, and say what
        became of it."""
        conversation = incoming.conversation
        team, channel, thread = conversation.workspace, incoming.channel, conversation.thread
        target = SlackTarget(
            team=team,
            channel=channel,
            thread_ts=thread,
            recipient_user=incoming.author or None,
            assistant_thread=event.get("channel_type") == "im",
        )
        native = self.settings.slack_native_streaming == "auto" and await self._native_ok(team)
        if target.assistant_thread and not await remembers(self.state, conversation):
            await spend(self.state.budget, team, "assistant.threads.setTitle", channel)
            await self.client.assistant_threads_setTitle(
                channel_id=channel, thread_ts=thread, title=one_line(incoming.text, TITLE_LENGTH)
            )

        def make_sink(reply_id: str) -> Sink:
            async def unsupported() -> None:
                await self._remember_no_native(team)

            return SlackReplySink(
                client=self.client,
                target=target,
                reply_id=reply_id,
                native=native,
                on_native_unsupported=unsupported,
                rollover_after=self.settings.slack_stream_rollover,
            )

        prepare: Callable[[], Awaitable[None]] | None = None
        current = str(event.get("ts", ""))
        if thread != current:  # a message in a thread: its history may be lost

            async def prepare() -> None:
                await self.threads.recall(conversation, current)

        request = self.policy.request(
            incoming,
            target={"team": team, "channel": channel},
            handover=payload(incoming, event),
            prepare=prepare,
        )
        return await self.responder.answer(request, make_sink, pacing=self.pacing)

    async def protected(self, handling: Awaitable[T]) -> T:
        """Run an event's handling in a task of its own. Bolt's listener task is
        cancelled when intake stops (Socket Mode closes at a drain), and a
        message claimed (acknowledged, and deduplicated for every replica) must
        still be answered or handed over: cut off between the claim and its
        reply, it would reach nobody."""
        task = asyncio.ensure_future(self._counted(handling))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    async def _counted(self, handling: Awaitable[T]) -> T:
        """``handling``, counted as work the drain waits for."""
        with self.responder.active.handling():
            return await handling

    async def cancel(self) -> None:
        """Cancel the replies still running, as ``asyncio.run`` would at exit."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _native_ok(self, team: str) -> bool:
        """Whether to try native streaming (yes when Redis can't tell: the first
        refusal switches the reply over anyway)."""
        try:
            return not await self.state.missing_features.lacks("slack", team, NATIVE_STREAMING)
        except REDIS_FAILURES:
            return True

    async def _remember_no_native(self, team: str) -> None:
        try:
            await self.state.missing_features.note(
                "slack", team, NATIVE_STREAMING, ttl=NATIVE_UNSUPPORTED_TTL
            )
        except REDIS_FAILURES as exc:
            log.warning("could not remember that workspace %s has no streaming: %s", team, exc)
