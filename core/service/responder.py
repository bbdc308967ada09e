"""One reply to one message of a conversation, with the state replicas share.

Every adapter answers a message the same way; only the sink and the ids
differ. So the order of things lives here, tested once:

1. quota check (a polite refusal is shown through the same sink);
2. the conversation lock (a newer message waits its turn, ``core.state.locks``);
3. the user's turn is stored and the model's context built in one step;
4. the reply streams, stoppable from any replica (``core.state.cancel``) and
   recorded in flight so a replica that dies has its reply finalised;
5. the answer is stored and the tokens counted.

Every line logged on a reply's behalf carries its platform, workspace, channel
and id (``core.telemetry.logs.reply_scope``), its last one the ``outcome``; with tracing
on (``core.telemetry.tracing``) the reply is one trace, rooted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.llm.client import LLMClient
from core.llm.events import Event, Finish, TextDelta
from core.llm.messages import ChatMessage
from core.reply.engine import FinalRetry, Reply, ReplyResult
from core.reply.observe import ReplyObserver
from core.reply.pacing import Pacing
from core.reply.sink import Place, Sink
from core.service.intake import Outcome as IntakeOutcome
from core.service.intake import event_received_at
from core.service.lifecycle import ActiveReplies, ShuttingDown
from core.state.connection import REDIS_FAILURES
from core.state.conversations import Turn, build_context
from core.state.inflight import InflightRecord, Tracker
from core.state.keys import ConversationKey
from core.state.locks import Lease
from core.state.store import State
from core.telemetry import logs, tracing
from core.telemetry.metrics import ChatrelayMetrics

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
    handover: Mapping[str, Any] = field(default_factory=dict)
    """What the adapter needs to answer this message again in another process
    (``core.state.deferred``): kept in the in-flight record, so a reply cut off
    before it showed anything is answered anew rather than lost."""
    received_at: float | None = field(default_factory=event_received_at)
    """Wall-clock seconds when the platform event reached the process (where the
    reply's trace starts); by default read from the event's handling context."""
    partition: str = ""
    """Which processes may answer it (a Discord shard; "" for any)."""
    prepare: Callable[[], Awaitable[None]] | None = None
    """Runs under the conversation lock before the context is read: e.g. a
    thread's history rebuilt from the platform, which must not interleave with
    another reply's turns."""

    @property
    def quota_ids(self) -> tuple[str, str]:
        """The user and channel as quota keys: bare ids repeat across workspaces
        and platforms, so they are qualified by both."""
        where = f"{self.conversation.platform}:{self.conversation.workspace}"
        return f"{where}:{self.author}", f"{where}:{self.channel}"


SinkFactory = Callable[[str], Sink]
"""Makes the reply's sink from its id (for Stop buttons)."""


class _Recording:
    """The engine's ``Progress`` into the reply's in-flight record, once it has
    one: what each message shows and where it is, so a finaliser in any process
    can show what the user saw. Returns at once: the record is written in the
    background."""

    def __init__(self) -> None:
        self.tracker: Tracker | None = None

    def __call__(self, index: int, text: str | None, final: bool, place: Place | None) -> None:
        if self.tracker is not None:
            self.tracker.confirmed(index, text, final, place)


class Responder:
    def __init__(
        self,
        state: State,
        llm: LLMClient,
        *,
        pacing: Pacing | None = None,
        metrics: ChatrelayMetrics | None = None,
        active: ActiveReplies | None = None,
        retry: FinalRetry | None = None,
        traces: tracing.Tracing | None = None,
    ) -> None:
        self.retry = retry
        self.tracing = traces if traces is not None else tracing.process_tracing()
        """None: replies are not traced (the default, unless OTEL settings say so)."""
        self.state = state
        self.llm = llm
        self.pacing = pacing or Pacing()
        self.metrics = metrics
        self.active = active if active is not None else ActiveReplies()

    async def answer(
        self,
        request: ReplyRequest,
        make_sink: SinkFactory,
        *,
        pacing: Pacing | None = None,
        refused: Callable[[], Awaitable[IntakeOutcome]] | None = None,
    ) -> IntakeOutcome:
        """Answer ``request`` and say what became of it, for the intake log.

        A message this process can no longer answer (it is draining) was
        acknowledged, and its platform won't send it again: it is handed over
        to the next process of its platform (``hand_over``), or ``refused``
        does it the adapter's way. So is one whose answering is cancelled (the
        process exits) before its reply was recorded in flight: nobody else
        knows of it. Once recorded, the in-flight registry answers for it."""
        recorded = False

        def on_recorded() -> None:
            nonlocal recorded
            recorded = True

        hand_over = refused if refused is not None else lambda: self.hand_over(request)
        try:
            await self.respond(request, make_sink, pacing=pacing, on_recorded=on_recorded)
        except ShuttingDown:
            return await hand_over()
        except asyncio.CancelledError:
            if not recorded:
                log.info("cancelled before the reply began: handing the message over")
                await hand_over()
            raise
        except Exception:
            log.exception("reply failed")
            return "failed"
        return "answered"

    async def hand_over(self, request: ReplyRequest) -> IntakeOutcome:
        """Leave ``request`` to the next process that serves its partition
        (``core.state.deferred``); ``failed`` when Redis can't take it."""
        try:
            await self.state.deferred.push(request.platform, request.partition, request.handover)
        except REDIS_FAILURES as exc:
            log.error("shutting down and could not hand a message over: %s", exc)
            return "failed"
        log.info("shutting down: message handed over to the next process")
        return "handed_over"

    async def respond(
        self,
        request: ReplyRequest,
        make_sink: SinkFactory,
        *,
        pacing: Pacing | None = None,
        on_recorded: Callable[[], None] | None = None,
    ) -> ReplyResult:
        """Answer ``request``; raises ``ShuttingDown`` once the process is draining.
        ``pacing``: the platform's, else the responder's default; ``on_recorded``:
        told once the reply is in the in-flight registry."""
        options = _Options(pacing, on_recorded)
        if not self.active.accepting:
            raise ShuttingDown()
        reply_id = uuid.uuid4().hex
        where = request.conversation.workspace
        if self.tracing is None:
            context = logs.ReplyContext(request.platform, where, request.channel)
            with logs.reply_scope(reply_id, context):
                return await self._respond(request, make_sink, reply_id, None, options)
        with self.tracing.reply(
            platform=request.platform,
            workspace=where,
            channel=request.channel,
            reply_id=reply_id,
            started=request.received_at,
        ) as trace:
            context = logs.ReplyContext(request.platform, where, request.channel, trace.trace_id)
            with logs.reply_scope(reply_id, context):
                return await self._respond(request, make_sink, reply_id, trace, options)

    async def _respond(
        self,
        request: ReplyRequest,
        make_sink: SinkFactory,
        reply_id: str,
        trace: tracing.ReplyTrace | None,
        options: _Options,
    ) -> ReplyResult:
        state = self.state
        user, channel = request.quota_ids
        quota = await state.usage.check(user=user, channel=channel)
        if not quota.allowed:
            return await self._refuse(
                make_sink(reply_id), quota.message or "Quota reached.", "quota", trace
            )
        lease = await state.locks.acquire(request.conversation)
        if lease is None:
            return await self._refuse(make_sink(reply_id), BUSY_TEXT, "busy", trace)
        async with lease:
            try:
                return await self._stream(request, reply_id, make_sink, lease, trace, options)
            except _LockLost:
                return await self._refuse(make_sink(reply_id), BUSY_TEXT, "busy", trace)

    async def _stream(
        self,
        request: ReplyRequest,
        reply_id: str,
        make_sink: SinkFactory,
        lease: Lease,
        trace: tracing.ReplyTrace | None,
        options: _Options,
    ) -> ReplyResult:
        state = self.state
        observer: ReplyObserver | None = (
            self.metrics.observer(request.platform) if self.metrics else None
        )
        if trace is not None:
            observer = trace.observer(observer)
        recording = _Recording()
        reply = Reply(
            make_sink(reply_id),
            budget=state.budget,
            pacing=options.pacing or self.pacing,
            observer=observer,
            retry=self.retry,
            progress=recording,
        )
        # Refused (draining) before anything is stored, so the request can be
        # handed over whole to the next process.
        self.active.add(reply)
        try:
            if request.prepare is not None:
                await request.prepare()
            if not await _holds(lease):
                raise _LockLost()
            messages = await self._context(request)
            record = InflightRecord(
                reply_id,
                request.platform,
                dict(request.target),
                handover=request.handover,
                partition=request.partition,
            )
            extra = {"model": request.model} if request.model else None
            self._started(request.platform)
            async with (
                state.cancel.watching(reply_id, reply),
                state.inflight.track(record) as tracker,
            ):
                recording.tracker = tracker
                if options.on_recorded is not None:
                    options.on_recorded()
                result = await reply.run(self.llm.stream(messages, extra=extra, trace=trace))
                if result.delivered or result.gone:
                    tracker.settled = True
                else:
                    await tracker.defer_final(
                        result.outcome.state,
                        result.outcome.reason or "",
                        {frame.index: frame.text for frame in result.undelivered},
                    )
        finally:
            self.active.discard(reply)
        self._ended(request, result)
        if lease.lost:
            log.warning(
                "the conversation's lock was lost while the reply streamed (a long Redis "
                "outage): another reply may have run alongside; storing this one anyway",
                extra={"error": "lock_lost"},
            )
        if result.text:
            try:
                await state.conversations.append(
                    request.conversation, Turn("assistant", None, result.text)
                )
            except REDIS_FAILURES as exc:  # shown already: only the model's memory of it is lost
                log.warning(
                    "could not store the answer in its conversation: %s",
                    exc,
                    extra={"error": logs.error_code(exc)},
                )
        if result.usage is not None:
            user, channel = request.quota_ids
            await state.usage.record(user=user, channel=channel, usage=result.usage)
        outcome = result.outcome.state
        if trace is not None:
            trace.outcome = outcome
        log.info(
            "reply %s: %d chars, %d messages, %d platform calls",
            outcome,
            len(result.text),
            result.messages,
            result.stats.updates,
            extra={"outcome": outcome},
        )
        return result

    async def _context(self, request: ReplyRequest) -> list[ChatMessage]:
        """The model's context with the user's turn stored; without Redis, an
        answer without history beats no answer."""
        conversations = self.state.conversations
        turn = Turn("user", request.author, request.text)
        try:
            return await conversations.context(request.conversation, request.system_prompt, turn)
        except REDIS_FAILURES as exc:
            log.warning(
                "Redis is unavailable (%s): answering without the conversation",
                exc,
                extra={"error": logs.error_code(exc)},
            )
            return build_context(
                request.system_prompt, [], conversations.prepare(turn), conversations.context_tokens
            )

    def _started(self, platform: str) -> None:
        if self.metrics:
            self.metrics.replies_started.inc(platform)
            self.metrics.active.inc(platform)

    def _ended(self, request: ReplyRequest, result: ReplyResult) -> None:
        metrics = self.metrics
        if not metrics:
            return
        platform = request.platform
        metrics.active.dec(platform)
        metrics.replies_ended.inc(platform, result.outcome.state)
        metrics.edits.observe(result.stats.updates, platform)
        if result.usage is not None:
            model = request.model or self.llm.providers[0].model
            metrics.tokens.inc(model, "in", amount=result.usage.input_tokens)
            metrics.tokens.inc(model, "out", amount=result.usage.output_tokens)

    async def _refuse(
        self, sink: Sink, text: str, outcome: str, trace: tracing.ReplyTrace | None
    ) -> ReplyResult:
        """Show a fixed text through the sink, as a reply that is not stored:
        ``outcome`` says why (``quota``, ``busy``)."""
        observer = trace.observer(None) if trace is not None else None
        reply = Reply(sink, budget=self.state.budget, pacing=self.pacing, observer=observer)
        result = await reply.run(_canned(text))
        if trace is not None:
            trace.outcome = outcome
        log.info("reply refused (%s)", outcome, extra={"outcome": outcome})
        return result


@dataclass(frozen=True, slots=True)
class _Options:
    """How one reply is run, as the adapter asked."""

    pacing: Pacing | None
    on_recorded: Callable[[], None] | None


class _LockLost(Exception):
    """Another reply holds the conversation now: this one must not stream beside it."""


async def _holds(lease: Lease) -> bool:
    """Whether ``lease`` still holds its conversation, asking Redis now (the
    lease learns of a loss only when it next extends) and taking a lock that
    expired but is free back."""
    with contextlib.suppress(*REDIS_FAILURES):
        await lease.extend()
    return not lease.lost or await lease.reacquire()


async def _canned(text: str) -> AsyncIterator[Event]:
    yield TextDelta(text)
    yield Finish("stop")
