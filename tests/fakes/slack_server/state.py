"""The fake Slack's recorded state: its settings (tokens, limits, experience, clock),
what it stored (messages, calls, statuses, deliveries, connections), the ways to
read and wait for it, and the helpers every Web API family stores messages with."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import aiohttp

from tests.fakes.faults import FaultSchedule
from tests.fakes.server import FakeServer, Signal
from tests.fakes.slack_server.limits import (
    DEFAULT_LIMITS,
    STATUS_AUTO_CLEAR,
    STREAM_BYTE_CAP,
    Limit,
    SlidingWindows,
)
from tests.fakes.slack_server.params import JSON, SlackError
from tests.fakes.slack_server.records import (
    Call,
    Delivery,
    Message,
    SocketConnection,
    Status,
    format_ts,
    parse_ts,
)

Clock = Callable[[], float]


Handler = Callable[[JSON], JSON]


class SlackState(FakeServer):
    """One workspace's Slack as the fake keeps it: the settings, the recorded state
    and the ways to read it. The Web API families, Socket Mode and the Events API
    delivery build on it (``FakeSlack`` puts them together)."""

    def __init__(
        self,
        *,
        team_id: str = "T1",
        team_name: str = "Fake Workspace",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_id: str = "A1",
        bot_tokens: Iterable[str] = ("xoxb-test",),
        app_tokens: Iterable[str] = ("xapp-test",),
        native_streaming: bool = True,
        streaming_error: str = "feature_not_enabled",
        stream_ttl: float = 300.0,
        max_text: int = 4_000,
        truncate_text: int = 40_000,
        limits: Mapping[str, Limit | None] | None = None,
        rate_limits: bool = True,
        replies_page_limit: int | None = None,
        max_socket_connections: int = 10,
        retry_delays: tuple[float, ...] = (0.0, 0.0, 0.0),
        clock: Clock = time.monotonic,
        verification_token: str = "verification-token",
        experience: Literal["assistant", "agent"] = "assistant",
    ) -> None:
        super().__init__()
        self.team_id = team_id
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_tokens: set[str] = set(bot_tokens)
        """Valid bot tokens; remove one to make it ``invalid_auth``."""
        self.app_tokens: set[str] = set(app_tokens)
        self.native_streaming = native_streaming
        """False: the stream methods answer ``streaming_error`` (change it any time)."""
        self.streaming_error = streaming_error
        self.stream_ttl = stream_ttl
        self.stream_byte_cap: int | None = STREAM_BYTE_CAP
        """UTF-8 bytes one streamed message takes (None: no cap); see the module doc."""
        self.max_text = max_text
        self.truncate_text = truncate_text
        self.limits: dict[str, Limit | None] = {**DEFAULT_LIMITS, **(limits or {})}
        """Per method; edit freely (``None`` lifts a limit)."""
        self.rate_limits = rate_limits
        self.replies_page_limit = replies_page_limit
        """Cap on conversations.replies/history page size (Slack gives 15 to
        non-Marketplace commercial apps); None means the caller's ``limit``."""
        self.usergroups: dict[str, list[str]] = {}
        """User group id -> member ids, for ``usergroups.users.list``."""
        self.max_socket_connections = max_socket_connections
        self.retry_delays = retry_delays
        """Seconds before each Slack retry (real Slack: about 0, 60, 300)."""
        self.clock = clock
        self.verification_token = verification_token
        self.experience = experience
        """The app's DM experience: ``assistant_view`` or ``agent_view`` (module doc)."""

        # Inspectable state.
        self.messages: dict[str, dict[str, Message]] = {}
        """channel → ts → message (deleted ones stay, flagged)."""
        self.ephemerals: list[JSON] = []
        self.calls: list[Call] = []
        self.rate_limited: Counter[str] = Counter()
        """429s answered per method: the fake's own AND injected ones (see
        ``natural_429s()`` and ``faults.count(kind="429")`` to tell them apart)."""
        self.statuses: dict[tuple[str, str], list[Status]] = {}
        """(channel, thread_ts) → every assistant.threads.setStatus call."""
        self.suggested_prompts: dict[tuple[str, str], list[JSON]] = {}
        """(channel, thread_ts) → every setSuggestedPrompts call's params (thread_ts
        ``""`` when the call named none)."""
        self.lost_prompts: list[JSON] = []
        """setSuggestedPrompts calls Slack answered ok but dropped (an agent app's
        call with a ``thread_ts``)."""
        self.titles: dict[tuple[str, str], list[str]] = {}
        self.reactions: list[tuple[str, str, str]] = []
        """(channel, timestamp, name) for each successful reactions.add."""
        self.users: dict[str, JSON] = {}
        """users.info answers by id; unknown ids get a made-up human user."""
        self.deliveries: list[Delivery] = []
        self.connections: list[SocketConnection] = []
        """Every Socket Mode connection ever accepted (closed ones have ``closed_at``)."""
        self.stray_acks: list[Any] = []
        """Messages from Socket Mode clients that matched no pending envelope."""

        self._delays: dict[str, float] = {}
        self._windows = SlidingWindows()
        self._ts_micros = 1_700_000_000 * 1_000_000
        self._tickets: set[str] = set()
        self._unacked: dict[str, Delivery] = {}
        """envelope_id → delivery not acked yet (kept after a timeout, for late acks)."""
        self._ack_waiters: dict[str, asyncio.Future[None]] = {}
        self._round_robin = itertools.count()
        self._connection_ids = itertools.count(1)
        self._signal = Signal()
        self._session: aiohttp.ClientSession | None = None
        self._handlers: dict[str, Handler] = self._method_handlers()
        self.faults = FaultSchedule(known=lambda method: method in self._handlers)
        """Scripted and seeded faults per Web API method (see ``tests.fakes.faults``):
        ``slack.faults.add("chat.appendStream", "429", retry_after=2)``,
        ``slack.faults.schedule(seed, ["chat.update"], p_500=0.1)``. A faulted call
        (other than ``slow``) is answered after the token check and before the rate
        limits and the method itself: it changes nothing and uses up no window."""

    def _method_handlers(self) -> dict[str, Handler]:
        """Web API method name → handler; ``FakeSlack`` lists the families' methods."""
        raise NotImplementedError

    @property
    def api_url(self) -> str:
        """slack_sdk's ``base_url`` form: ``http://127.0.0.1:PORT/api/`` (trailing slash)."""
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def socket_url(self) -> str:
        """The Socket Mode endpoint; apps.connections.open adds ``?ticket=…``."""
        return f"ws://127.0.0.1:{self.port}/socket"

    def next_ts(self) -> str:
        """A fresh message ts, strictly increasing (``1700000000.000100`` onwards)."""
        self._ts_micros += 100
        return format_ts(self._ts_micros)

    # ------------------------------------------------------------------ inspecting

    def message(self, channel: str, ts: str) -> Message:
        """The stored message, with an expired stream marked as ended."""
        record = self.messages[channel][ts]
        self._refresh_stream(record)
        return record

    def rendered(self, channel: str, ts: str) -> str:
        """What a user sees: the streamed markdown (then any text of the blocks
        chat.stopStream attached), else ``markdown_text``, else the blocks' text (they
        win over ``text``), else ``text``. Empty for deleted messages."""
        return self.message(channel, ts).rendered

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The parent (if known) and its replies, oldest first; deleted ones left out."""
        found = [
            m
            for m in self.messages.get(channel, {}).values()
            if not m.deleted and (m.ts == thread_ts or m.thread_ts == thread_ts)
        ]
        for m in found:
            self._refresh_stream(m)
        return sorted(found, key=lambda m: parse_ts(m.ts))

    def bot_messages(self, channel: str | None = None) -> list[Message]:
        """Every non-deleted message the bot posted or streamed, oldest first."""
        channels = [channel] if channel is not None else list(self.messages)
        found = [
            m
            for c in channels
            for m in self.messages.get(c, {}).values()
            if m.bot_id == self.bot_id and not m.deleted
        ]
        for m in found:
            self._refresh_stream(m)
        return sorted(found, key=lambda m: parse_ts(m.ts))

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        """Calls to one method, optionally only the successful (or failed) ones."""
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def natural_429s(self, method: str | None = None) -> int:
        """429s the fake's own rate limits answered (injected ones left out): what a
        bot that paces itself within Slack's limits never causes."""
        return sum(
            1
            for c in self.calls
            if c.status == 429 and c.injected is None and (method is None or c.method == method)
        )

    def injected_calls(self, kind: str | None = None) -> list[Call]:
        """Calls ``faults`` put a fault on, optionally of one kind."""
        return [c for c in self.calls if c.injected is not None and kind in (None, c.injected)]

    def status(self, channel: str, thread_ts: str) -> str:
        """The assistant status a user sees now ("" when none or auto-cleared)."""
        history = self.statuses.get((channel, thread_ts))
        if not history:
            return ""
        last = history[-1]
        if self.clock() - last.time >= STATUS_AUTO_CLEAR:
            return ""
        return last.status

    # The waits take a defaulted ``timeout`` (hence ASYNC109) so that every wait in a
    # test is bounded without each call wrapping itself in asyncio.timeout.
    async def wait_for(self, condition: Callable[[], object], timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Until ``condition()`` is truthy, re-checked after every change the fake sees
        (a call answered, a message stored, a socket connected or acked)."""
        async with asyncio.timeout(timeout):
            await self._signal.wait_until(condition)

    async def wait_calls(self, method: str, count: int = 1, timeout: float = 2.0) -> Call:  # noqa: ASYNC109
        """The ``count``-th answered call to ``method`` (1-based)."""

        def answered() -> list[Call]:
            return [c for c in self.calls_to(method) if c.answered_at is not None]

        await self.wait_for(lambda: len(answered()) >= count, timeout)
        return answered()[count - 1]

    # ------------------------------------------------------------------ storing

    def _new_bot_message(self, channel: str, thread_ts: str | None) -> Message:
        now = self.clock()
        ts = self.next_ts()
        if thread_ts is not None:
            self._clear_status(channel, thread_ts)
        return Message(
            channel=channel,
            ts=ts,
            team=self.team_id,
            thread_ts=thread_ts,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            app_id=self.app_id,
            created_at=now,
        )

    def _store(self, record: Message) -> None:
        self.messages.setdefault(record.channel, {})[record.ts] = record

    def _clear_status(self, channel: str, thread_ts: str) -> None:
        """Slack clears the assistant status when the app replies in the thread."""
        history = self.statuses.get((channel, thread_ts))
        if history and history[-1].status:
            history.append(Status(self.clock(), "", None))

    def _existing(self, channel: str, ts: str) -> Message:
        record = self.messages.get(channel, {}).get(ts)
        if record is None or record.deleted:
            raise SlackError("message_not_found")
        self._refresh_stream(record)
        return record

    def _refresh_stream(self, record: Message) -> None:
        started = record.stream_started_at
        if record.streaming and started is not None and self.clock() - started > self.stream_ttl:
            record.streaming = False
            record.stream_end = "expired"
            record._revise(started + self.stream_ttl, "expired")

    def _find(self, ts: str, channel: str | None) -> Message | None:
        channels = [channel] if channel is not None else list(self.messages)
        for c in channels:
            record = self.messages.get(c, {}).get(ts)
            if record is not None:
                return record
        return None
