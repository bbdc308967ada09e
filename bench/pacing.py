"""Pacing under platform limits: chatrelay against the reference bots' edit cadences, one run.

N replies stream at once into one Discord channel or one Slack workspace. Each
contender shows them through the fake platform servers of the tests (real HTTP on
127.0.0.1, real 429s from the documented limits), driven by the real client
libraries (discord.py, slack_sdk):

- ``chatrelay``: the real ``Reply`` engine, the real adapter sink
  (``DiscordReplySink`` / ``SlackReplySink`` in post+edit mode) and a
  ``LocalBudget`` with ``DEFAULT_LIMITS``, production pacing (1 s);
- ``fixed 1 s`` (llmcord): post on the first delta, then edit when a delta
  arrives and 1 s has passed since the last edit, awaited inline;
- ``every 20 deltas`` (ChatGPT-in-Slack): post a placeholder at once, edit on
  every 20th delta, no time throttle;
- ``256-char buffer`` (slack_sdk ``chat_stream``): post once 256 characters are
  buffered, then a call per 256 new characters.

Every baseline retries a 429 after its ``Retry-After`` (discord.py already does
up to five times inside the call; slack_sdk's RateLimitErrorRetryHandler does
the same), and ends with a final edit carrying the whole text.

The model (issue 7): one fake LLM server (``tests/fakes/llm_server/``) on
127.0.0.1 streams every reply over real HTTP, a Chat Completions SSE body with one
event per write, a configurable first-token delay (``--first-token``), rate
(``--rate``) and length (``--tokens``). Every contender reads it through the real
``LLMClient.stream`` (SSE decoder and dialect, as in production), so all read
identical bytes and differ only in when they call the platform. A token's
*arrival* is when its event comes out of the client, read by a task that never
waits on the platform: chatrelay's engine has one and notes it (``ReplyStats``);
each baseline gets one too (``Feed.arrivals``), so a baseline that stalls while it
awaits an edit finds a backlog of arrived tokens and pays for the stall. The
fake sleeps between writes (relative delays), so the rate is a ceiling: measured
about 23-27 tokens/s for a nominal 30, and the first token comes 0.2-0.9 s after
the nominal delay (connection setup, scaled ×10). The fake runs in the same event
loop, so its CPU shows in the "real s" column for every contender alike.

Why time is scaled: Slack's chat.update allows 50 calls a minute per workspace,
so 50 replies need minutes per contender. Every clock on the contenders' side
(engine, budget, pacing, baselines' timers and Retry-After sleeps) runs
``--scale`` times faster than real time, the fake LLM server's delays are divided by
``--scale`` (it sleeps in real time), FakeSlack measures its windows on the
same scaled clock (so its Retry-After is in scaled seconds), and FakeDiscord,
which has no clock parameter, gets its windows divided by ``--scale`` (as
tests/discord/conftest.py does). All figures are in scaled (platform) seconds.
Side effect, against every contender alike: real HTTP latency on 127.0.0.1 and
CPU time look ``--scale`` times longer.

Then, unless ``--many 0``, ``bench.many``: 2,000 concurrent replies in one
process (CPU per 1,000 tokens, memory per active reply, staleness). Its model
stays an in-process generator: the fake LLM server's own CPU for 2,000 HTTP
streams, in the same process on 2 cores, would be charged to chatrelay.

Run: ``python -m bench.pacing`` (``--help`` for sizes). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import random
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import discord
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bots.cli import platform_limits
from bots.discord.api import ChannelOutlet
from bots.discord.format import ZWSP
from bots.discord.sink import DiscordReplySink
from bots.slack.sink import SlackReplySink, SlackTarget
from core.llm.client import LLMClient, RetryPolicy, Timeouts
from core.llm.events import Event, StreamError, TextDelta
from core.llm.messages import ChatMessage
from core.llm.provider import Provider
from core.reply.budget import LimitTable, LocalBudget
from core.reply.engine import Reply
from core.reply.observe import percentile
from core.reply.pacing import Pacing
from core.reply.sink import Frame, Outcome, SinkCall
from tests.fakes.discord_server import CHANNEL_ID, FakeDiscord, RateLimits, point_discord_py_at
from tests.fakes.discord_server import Limit as DiscordLimit
from tests.fakes.llm_server import FakeLLMServer, FakeResponse, RecordedRequest
from tests.fakes.slack_server import FakeSlack
from tests.fakes.streams import chat_stream, split_events

DEFAULT_LIMITS = platform_limits()
"""Every adapter's default rate limits, as ``chatrelay run`` has them."""
WORDS = ("stream", "token", "reply", "edit", "budget", "channel", "model", "pace", "slack")


# --------------------------------------------------------------------------- time


class ScaledClock:
    """``core.clock.Clock`` running ``scale`` times faster than the event loop."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def now(self) -> float:
        return asyncio.get_running_loop().time() * self.scale

    def monotonic(self) -> float:
        """The same scale for code that reads ``time.monotonic`` (FakeSlack)."""
        return time.monotonic() * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            async with asyncio.timeout(seconds / self.scale):
                await event.wait()
        except TimeoutError:
            return False
        return True


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Model:
    tokens: int = 300
    rate: float = 30.0
    first_token: float = 0.5

    def text(self, seed: int) -> list[str]:
        """Plain words (no markup, no mentions): the rendered text must equal it."""
        rng = random.Random(seed)
        return [("" if i == 0 else " ") + rng.choice(WORDS) for i in range(self.tokens)]

    def response(self, tokens: list[str], scale: float) -> FakeResponse:
        """The reply as the fake LLM server streams it: a Chat Completions SSE body, one
        event per write, ``first_token`` before the first token and ``1 / rate`` between
        two (divided by ``scale``: the server sleeps in real time). The role chunk goes
        with the first token and the finish, usage and ``[DONE]`` with the last, so the
        pauses fall only between tokens."""
        pieces = split_events(chat_stream(tokens))
        assert len(pieces) == len(tokens) + 4, "role, tokens, finish, usage, [DONE]"
        chunks = pieces[1:-3]
        chunks[0] = pieces[0] + chunks[0]
        chunks[-1] = chunks[-1] + b"".join(pieces[-3:])
        return FakeResponse(
            chunks=chunks,
            first_byte_delay=self.first_token / scale,
            chunk_delay=1.0 / self.rate / scale,
        )


def prompt(reply: int) -> list[ChatMessage]:
    return [ChatMessage("user", f"reply {reply}")]


class Feed:
    """Every contender's tokens: real HTTP from one ``FakeLLMServer`` through the real
    ``LLMClient`` (SSE decoder and Chat Completions dialect), as in production."""

    def __init__(self, client: LLMClient, clock: ScaledClock) -> None:
        self.client = client
        self.clock = clock

    def events(self, reply: int) -> AsyncIterator[Event]:
        """For chatrelay's engine, which notes each event's arrival itself."""
        return self.client.stream(prompt(reply))

    async def arrivals(self, reply: int) -> AsyncIterator[tuple[str, float]]:
        """For the baselines: each token with its arrival time. A reader task records
        the arrival as soon as the client yields the event (as chatrelay's engine does
        with its own reader task), so a baseline that stalls while it awaits a platform
        call finds a backlog of already-arrived tokens and pays for the stall, as it
        would against a real model, which keeps sending meanwhile."""
        queue: asyncio.Queue[tuple[str, float] | BaseException | None] = asyncio.Queue()

        async def read() -> None:
            try:
                stream = cast(AsyncGenerator[Event, None], self.client.stream(prompt(reply)))
                async with aclosing(stream) as events:
                    async for event in events:
                        if type(event) is TextDelta:
                            queue.put_nowait((event.text, self.clock.now()))
                        elif type(event) is StreamError:
                            raise RuntimeError(f"model stream failed: {event.message}")
            except Exception as exc:  # handed to the baseline, which fails the reply
                queue.put_nowait(exc)
            else:
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


@asynccontextmanager
async def llm_feed(model: Model, texts: list[list[str]], clock: ScaledClock) -> AsyncIterator[Feed]:
    """One fake LLM server on 127.0.0.1 answering reply ``i``'s request with ``texts[i]``."""

    def answer(request: RecordedRequest) -> FakeResponse:
        reply = int(request.json["messages"][-1]["content"].split()[-1])
        return model.response(texts[reply], clock.scale)

    async with FakeLLMServer() as server:
        server.enqueue(*(answer for _ in texts), path="chat/completions")
        # Never time out or retry: a baseline may leave its stream unread for minutes.
        client = LLMClient(
            [Provider(server.base_url, "fake")],
            timeouts=Timeouts(connect=30.0, first_token=3600.0, idle=3600.0),
            retry=RetryPolicy(max_retries=0),
        )
        try:
            yield Feed(client, clock)
        finally:
            await client.aclose()


# --------------------------------------------------------------------------- results


@dataclass
class ReplyFigures:
    staleness: list[float] = field(default_factory=list)
    first_visible: float | None = None
    """Event → first completed call showing anything: placeholder, typing, text."""
    first_text: float | None = None
    """Event → first completed call showing model text."""
    correct: bool = False
    finished: bool = False


@dataclass
class Row:
    contender: str
    scenario: str
    replies: list[ReplyFigures]
    rate_limited: int
    updates: int
    writes: int
    sent_bytes: int
    wall: float

    def summary(self) -> dict[str, Any]:
        """The figures as numbers, for ``--json`` (and the plots)."""
        stale = [s for r in self.replies for s in r.staleness]
        first = [r.first_visible for r in self.replies if r.first_visible is not None]
        text = [r.first_text for r in self.replies if r.first_text is not None]
        n = len(self.replies)
        return {
            "scenario": self.scenario,
            "contender": self.contender,
            "replies": n,
            "staleness": {f"p{q}": percentile(stale, q / 100) for q in (10, 25, 50, 75, 90, 99)},
            "rate_limited": self.rate_limited,
            "updates_per_reply": self.updates / n,
            "writes_per_reply": self.writes / n,
            "bytes_per_reply": self.sent_bytes / n,
            "first_visible": {"p50": percentile(first, 0.5), "p99": percentile(first, 0.99)},
            "first_text": {"p50": percentile(text, 0.5), "p99": percentile(text, 0.99)},
            "correct": sum(r.correct for r in self.replies) / n,
            "real_seconds": self.wall,
        }

    def cells(self) -> list[str]:
        n = len(self.replies)
        stale = [s for r in self.replies for s in r.staleness]
        first = [r.first_visible for r in self.replies if r.first_visible is not None]
        text = [r.first_text for r in self.replies if r.first_text is not None]
        correct = sum(r.correct for r in self.replies) / n * 100
        unfinished = sum(not r.finished for r in self.replies)
        return [
            self.scenario,
            self.contender,
            f"{percentile(stale, 0.5):.2f}",
            f"{percentile(stale, 0.99):.2f}",
            str(self.rate_limited),
            f"{self.updates / n:.1f}",
            f"{self.sent_bytes / n / 1000:.1f}",
            f"{percentile(first, 0.5) * 1000:.0f}",
            f"{percentile(first, 0.99) * 1000:.0f}",
            f"{percentile(text, 0.5):.2f}",
            f"{percentile(text, 0.99):.2f}",
            f"{correct:.0f} %" + (f" ({unfinished} unfinished)" if unfinished else ""),
            f"{self.wall:.0f}",
        ]


HEADER = (
    "| scenario | contender | stale p50 s | stale p99 s | 429s | edits/reply | KB/reply "
    "| first visible p50 ms | p99 ms | first text p50 s | p99 s | final text correct "
    "| real s |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
)


class Tracker:
    """Staleness the way the engine counts it, for the baselines: each token's
    delay from arrival to the end of the first completed call showing it."""

    def __init__(self, clock: ScaledClock, start: float) -> None:
        self.clock = clock
        self.start = start
        self.figures = ReplyFigures()
        self._arrivals: list[tuple[int, float]] = []
        self._next = 0
        self.text = ""

    def arrived(self, token: str, when: float) -> None:
        self.text += token
        self._arrivals.append((len(self.text), when))

    def shown(self, length: int) -> None:
        now = self.clock.now()
        if self.figures.first_visible is None:
            self.figures.first_visible = now - self.start
        if self.figures.first_text is None and length > 0:
            self.figures.first_text = now - self.start
        while self._next < len(self._arrivals) and self._arrivals[self._next][0] <= length:
            self.figures.staleness.append(now - self._arrivals[self._next][1])
            self._next += 1


# --------------------------------------------------------------------------- platforms


class Platform:
    """What a baseline needs from a platform: show a reply's text so far, 429s retried.

    ``post`` creates the message, ``edit`` shows the whole text so far (an edit,
    or an append of what is new on Slack's streaming API), ``close`` shows the
    final text if it is not shown yet (and ends a native stream)."""

    clock: ScaledClock
    placeholder = "Typing…"

    async def post(self, reply: int, text: str) -> Any:
        raise NotImplementedError

    async def edit(self, reply: int, handle: Any, text: str) -> None:
        raise NotImplementedError

    async def close(self, reply: int, handle: Any, text: str, shown: str) -> None:
        if text != shown:
            await self.edit(reply, handle, text)


class SlackPlatform(Platform):
    def __init__(self, client: AsyncWebClient, clock: ScaledClock) -> None:
        self.client = client
        self.clock = clock

    async def _call(self, method: str, **params: Any) -> Any:
        while True:
            try:
                return await self.client.api_call(method, json=params)
            except SlackApiError as exc:
                if exc.response.status_code != 429:
                    raise
                # What slack_sdk's RateLimitErrorRetryHandler does: sleep in place
                # (without its 0-1 s jitter), and here for as long as it takes.
                await self.clock.sleep(float(exc.response.headers.get("Retry-After", 1)))

    async def post(self, reply: int, text: str) -> Any:
        response = await self._call("chat.postMessage", channel=slack_channel(reply), text=text)
        return response["ts"]

    async def edit(self, reply: int, handle: Any, text: str) -> None:
        await self._call("chat.update", channel=slack_channel(reply), ts=handle, text=text)


@dataclass
class _Stream:
    ts: str
    sent: int


class SlackNativePlatform(SlackPlatform):
    """Slack's streaming API: start, append what is new, stop with the rest."""

    placeholder = ""

    def _where(self, reply: int) -> dict[str, Any]:
        return {"channel": slack_channel(reply), "thread_ts": THREAD_TS}

    async def post(self, reply: int, text: str) -> Any:
        extra = {"markdown_text": text} if text else {}
        response = await self._call(
            "chat.startStream",
            **self._where(reply),
            recipient_user_id="U1",
            recipient_team_id="T1",
            **extra,
        )
        return _Stream(str(response["ts"]), len(text))

    async def edit(self, reply: int, handle: Any, text: str) -> None:
        new = text[handle.sent :]
        if new:
            await self._call(
                "chat.appendStream", channel=slack_channel(reply), ts=handle.ts, markdown_text=new
            )
            handle.sent = len(text)

    async def close(self, reply: int, handle: Any, text: str, shown: str) -> None:
        new = text[handle.sent :]
        extra = {"markdown_text": new} if new else {}
        await self._call("chat.stopStream", channel=slack_channel(reply), ts=handle.ts, **extra)
        handle.sent = len(text)


class DiscordPlatform(Platform):
    def __init__(self, client: discord.Client, clock: ScaledClock) -> None:
        self.channel = client.get_partial_messageable(CHANNEL_ID)
        self.clock = clock

    async def _retry(self, call: Callable[[], Awaitable[Any]]) -> Any:
        while True:
            try:
                return await call()
            except discord.HTTPException as exc:  # discord.py gave up after its retries
                if exc.status != 429:
                    raise
                # FakeDiscord's windows are scaled: wait one channel window.
                await self.clock.sleep(5.0)

    async def post(self, reply: int, text: str) -> Any:
        return await self._retry(lambda: self.channel.send(content=text))

    async def edit(self, reply: int, handle: Any, text: str) -> None:
        await self._retry(lambda: handle.edit(content=text))


THREAD_TS = "1700000000.000100"
"""The user's message each Slack reply answers in its thread (native streams need one)."""


def slack_channel(reply: int) -> str:
    """One channel per reply: the workspace-wide chat.update limit is what binds."""
    return f"C{reply:05d}"


# --------------------------------------------------------------------------- baselines

Baseline = Callable[[Platform, int, Feed, float], Awaitable[ReplyFigures]]


async def fixed_interval(platform: Platform, reply: int, feed: Feed, start: float) -> ReplyFigures:
    """llmcord: first delta posts, later deltas edit if 1 s passed since the last edit."""
    clock = platform.clock
    track = Tracker(clock, start)
    handle: Any = None
    last = 0.0
    shown = ""
    async for token, when in feed.arrivals(reply):
        track.arrived(token, when)
        if handle is None:
            handle = await platform.post(reply, track.text)
        elif clock.now() - last >= 1.0:
            await platform.edit(reply, handle, track.text)
        else:
            continue
        last = clock.now()
        shown = track.text
        track.shown(len(shown))
    await platform.close(reply, handle, track.text, shown)
    track.shown(len(track.text))
    track.figures.finished = True
    return track.figures


async def every_n_deltas(
    platform: Platform, reply: int, feed: Feed, start: float, n: int = 20
) -> ReplyFigures:
    """ChatGPT-in-Slack: a placeholder at once, then an edit on every ``n``-th delta."""
    clock = platform.clock
    track = Tracker(clock, start)
    handle = await platform.post(reply, platform.placeholder)
    track.shown(0)
    count = 0
    shown = platform.placeholder
    async for token, when in feed.arrivals(reply):
        track.arrived(token, when)
        count += 1
        if count % n == 0:
            await platform.edit(reply, handle, track.text)
            shown = track.text
            track.shown(len(shown))
    await platform.close(reply, handle, track.text, shown)
    track.shown(len(track.text))
    track.figures.finished = True
    return track.figures


async def char_buffer(
    platform: Platform,
    reply: int,
    feed: Feed,
    start: float,
    size: int = 256,
) -> ReplyFigures:
    """slack_sdk chat_stream: a call whenever ``size`` new characters are buffered."""
    clock = platform.clock
    track = Tracker(clock, start)
    handle: Any = None
    shown = ""

    async for token, when in feed.arrivals(reply):
        track.arrived(token, when)
        if len(track.text) - len(shown) >= size:
            if handle is None:
                handle = await platform.post(reply, track.text)
            else:
                await platform.edit(reply, handle, track.text)
            shown = track.text
            track.shown(len(shown))
    if handle is None:
        handle = await platform.post(reply, track.text)
        shown = track.text
    await platform.close(reply, handle, track.text, shown)
    track.shown(len(track.text))
    track.figures.finished = True
    return track.figures


class ScaledRateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, sleeping ``Retry-After`` on the scaled clock (without
    its 0-1 s jitter) and retrying until it gets through, so the text is complete."""

    def __init__(self, clock: ScaledClock) -> None:
        super().__init__(max_retry_count=10_000)
        self.clock = clock

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            raise error or RuntimeError("no response to retry")
        state.next_attempt_requested = True
        values = [v for k, v in response.headers.items() if k.lower() == "retry-after"]
        await self.clock.sleep(float(values[0][0]) if values else 1.0)
        state.increment_current_attempt()


async def sdk_chat_stream(platform: Platform, reply: int, feed: Feed, start: float) -> ReplyFigures:
    """The real slack_sdk ``chat_stream`` (256-character buffer), native streaming only."""
    assert isinstance(platform, SlackNativePlatform)
    clock = platform.clock
    track = Tracker(clock, start)
    stream = await platform.client.chat_stream(
        channel=slack_channel(reply),
        thread_ts=THREAD_TS,
        recipient_team_id="T1",
        recipient_user_id="U1",
    )
    async for token, when in feed.arrivals(reply):
        track.arrived(token, when)
        if await stream.append(markdown_text=token) is not None:
            track.shown(len(track.text))  # the buffer was flushed: all of it is shown
    await stream.stop()
    track.shown(len(track.text))
    track.figures.finished = True
    return track.figures


BASELINES: list[tuple[str, Baseline]] = [
    ("fixed 1 s (llmcord)", fixed_interval),
    ("every 20 deltas (ChatGPT-in-Slack)", every_n_deltas),
    ("256-char buffer (slack_sdk chat_stream)", char_buffer),
]


# --------------------------------------------------------------------------- chatrelay


class TimedSink:
    """Delegates to the adapter's sink and notes when the first call that shows
    anything (placeholder, typing status or text) completed: event → first visible."""

    def __init__(self, inner: Any, clock: ScaledClock, start: float) -> None:
        self.inner = inner
        self.clock = clock
        self.start = start
        self.first: float | None = None

    @property
    def limit(self) -> int:
        return int(self.inner.limit)

    @property
    def append_only(self) -> bool:
        return bool(self.inner.append_only)

    def scopes(self, call: SinkCall, index: int) -> Sequence[str]:
        return self.inner.scopes(call, index)  # type: ignore[no-any-return]

    def _seen(self) -> None:
        if self.first is None:
            self.first = self.clock.now() - self.start

    async def open(self) -> None:
        await self.inner.open()
        self._seen()

    async def render(self, frame: Frame) -> None:
        await self.inner.render(frame)
        self._seen()

    async def finish(self, frame: Frame, outcome: Outcome) -> None:
        await self.inner.finish(frame, outcome)
        self._seen()


async def run_chatrelay(
    make_sink: Callable[[int, LocalBudget], Any],
    reply: int,
    feed: Feed,
    clock: ScaledClock,
    budget: LocalBudget,
    start: float,
) -> tuple[ReplyFigures, Any]:
    inner = make_sink(reply, budget)
    sink = TimedSink(inner, clock, start)
    engine = Reply(sink, budget=budget, pacing=Pacing(min_interval=1.0), clock=clock)
    result = await engine.run(feed.events(reply))
    figures = ReplyFigures(
        staleness=list(result.stats.staleness),
        first_visible=sink.first,
        first_text=result.stats.first_visible,
        finished=result.delivered and result.outcome.state == "done",
    )
    return figures, inner


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    platform: str
    replies: int
    native: bool = False

    @property
    def name(self) -> str:
        if self.platform == "discord":
            where = "Discord, 1 channel"
        else:
            mode = "native streaming" if self.native else "chat.update"
            where = f"Slack {mode}, 1 workspace"
        return f"{where}, {self.replies} replies"


def scaled_discord_limits(scale: float) -> RateLimits:
    return RateLimits(
        channel_messages=DiscordLimit(5, 5.0 / scale),
        interaction_webhook=DiscordLimit(5, 2.0 / scale),
        global_per_second=int(50 * scale),
        route_default=DiscordLimit(50, 1.0 / scale),
    )


DISCORD_WRITES = {"channels/{channel_id}/messages", "channels/{channel_id}/messages/{message_id}"}


def discord_answer(content: str) -> str:
    """The model text of a chatrelay Discord message: state lines (``-# ``) dropped."""
    lines = content.split("\n")
    while lines and lines[-1].startswith("-# "):
        lines.pop()
    return "\n".join(lines).replace(ZWSP, "")


async def run_discord(
    scenario: Scenario, contender: str, model: Model, clock: ScaledClock, cutoff: float
) -> Row:
    texts = [model.text(i) for i in range(scenario.replies)]
    async with (
        FakeDiscord(limits=scaled_discord_limits(clock.scale)) as fake,
        llm_feed(model, texts, clock) as feed,
    ):
        with point_discord_py_at(fake):
            client = discord.Client(intents=discord.Intents.none())
            await client.login(fake.bot_token)
            try:
                fake.calls.clear()
                began = time.perf_counter()
                start = clock.now()
                figures: list[ReplyFigures] = []
                shown: list[str] = []
                if contender == "chatrelay":
                    budget = LocalBudget(LimitTable(DEFAULT_LIMITS), clock=clock)
                    created: dict[int, list[int]] = {}

                    def make(reply: int, budget: LocalBudget) -> DiscordReplySink:
                        async def on_created(message_id: int) -> None:
                            created.setdefault(reply, []).append(message_id)

                        outlet = ChannelOutlet(client.get_partial_messageable(CHANNEL_ID))
                        return DiscordReplySink(
                            outlet,
                            reply_id=f"r{reply}",
                            asker=1,
                            clock=clock,
                            on_created=on_created,
                        )

                    results = await bounded(
                        [
                            run_chatrelay(make, i, feed, clock, budget, start)
                            for i in range(scenario.replies)
                        ],
                        cutoff / clock.scale,
                    )
                    for i, result in enumerate(results):
                        figures.append(result[0] if result else ReplyFigures())
                        parts = [fake.message(CHANNEL_ID, m).content for m in created.get(i, [])]
                        shown.append("".join(discord_answer(p) for p in parts))
                else:
                    baseline = dict(BASELINES)[contender]
                    platform = DiscordPlatform(client, clock)
                    got = await bounded(
                        [baseline(platform, i, feed, start) for i in range(scenario.replies)],
                        cutoff / clock.scale,
                    )
                    figures = [g or ReplyFigures() for g in got]
                    # Map messages to replies by final content: every model text is distinct.
                    finals = [m.content for m in fake.channel_messages(CHANNEL_ID)]
                    shown = ["".join(t) if "".join(t) in finals else "" for t in texts]
                wall = time.perf_counter() - began
            finally:
                await client.close()
        for fig, text, tokens in zip(figures, shown, texts, strict=True):
            fig.correct = fig.finished and text == "".join(tokens)
        writes = [c for c in fake.calls if c.route in DISCORD_WRITES]
        return Row(
            contender=contender,
            scenario=scenario.name,
            replies=figures,
            rate_limited=sum(fake.rate_limited.values()),
            updates=sum(1 for c in writes if c.method == "PATCH" and c.status == 200),
            writes=sum(1 for c in writes if c.status == 200),
            sent_bytes=sum(len(json.dumps(c.json or {})) for c in fake.calls),
            wall=wall,
        )


def slack_answer(blocks: list[dict[str, Any]] | None, text: str) -> str:
    """The model text of a Slack message: its markdown blocks, else its text."""
    if blocks:
        return "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "markdown")
    return text


async def run_slack(
    scenario: Scenario, contender: str, model: Model, clock: ScaledClock, cutoff: float
) -> Row:
    texts = [model.text(i) for i in range(scenario.replies)]
    native = scenario.native
    async with (
        FakeSlack(team_id="T1", clock=clock.monotonic, native_streaming=native) as fake,
        aiohttp.ClientSession() as session,
        llm_feed(model, texts, clock) as feed,
    ):
        client = AsyncWebClient(token="xoxb-test", base_url=fake.api_url, session=session)
        began = time.perf_counter()
        start = clock.now()
        figures: list[ReplyFigures]
        stamps: list[list[str]] = []
        if contender == "chatrelay":
            budget = LocalBudget(LimitTable(DEFAULT_LIMITS), clock=clock)

            def make(reply: int, budget: LocalBudget) -> SlackReplySink:
                thread = THREAD_TS if native else None
                target = SlackTarget("T1", slack_channel(reply), thread, recipient_user="U1")
                return SlackReplySink(client, target, f"r{reply}", native=native, clock=clock)

            results = await bounded(
                [
                    run_chatrelay(make, i, feed, clock, budget, start)
                    for i in range(scenario.replies)
                ],
                cutoff / clock.scale,
            )
            figures = [r[0] if r else ReplyFigures() for r in results]
            stamps = [r[1].timestamps if r else [] for r in results]
        else:
            baseline = dict(BASELINES)[contender]
            platform: Platform = (
                SlackNativePlatform(client, clock) if native else SlackPlatform(client, clock)
            )
            if native and baseline is char_buffer:
                baseline = sdk_chat_stream
                client.retry_handlers.append(ScaledRateLimitRetry(clock))
            got = await bounded(
                [baseline(platform, i, feed, start) for i in range(scenario.replies)],
                cutoff / clock.scale,
            )
            figures = [g or ReplyFigures() for g in got]
            stamps = [list(fake.messages.get(slack_channel(i), {})) for i in range(len(got))]
        wall = time.perf_counter() - began
        for i, fig in enumerate(figures):
            parts = []
            for ts in stamps[i]:
                message = fake.message(slack_channel(i), ts)
                if message.source == "stream":
                    parts.append(message.markdown)
                else:
                    parts.append(slack_answer(message.blocks, message.text))
            fig.correct = fig.finished and "".join(parts) == "".join(texts[i])
        chat = [c for c in fake.calls if c.method.startswith("chat.")]
        return Row(
            contender=contender,
            scenario=scenario.name,
            replies=figures,
            rate_limited=sum(fake.rate_limited.values()),
            updates=sum(
                1 for c in chat if c.method in ("chat.update", "chat.appendStream") and c.ok
            ),
            writes=sum(1 for c in chat if c.ok),
            sent_bytes=sum(len(json.dumps(c.params)) for c in chat),
            wall=wall,
        )


async def bounded(coros: Sequence[Awaitable[Any]], seconds: float) -> list[Any]:
    """Run every reply; one still running after ``seconds`` (real) counts as unfinished."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    out: list[Any] = []
    for task in tasks:
        if task in done and task.exception() is None:
            out.append(task.result())
        else:
            if task in done:
                print(f"  a reply failed: {task.exception()!r}", file=sys.stderr)
            out.append(None)
    return out


CONTENDERS = ["chatrelay", *(name for name, _ in BASELINES)]


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    clock = ScaledClock(args.scale)
    model = Model(args.tokens, args.rate, args.first_token)
    scenarios = [
        *(Scenario("discord", n) for n in args.discord),
        *(Scenario("slack", n) for n in args.slack),
        *(Scenario("slack", n, native=True) for n in args.slack_native),
    ]
    print(
        f"{datetime.date.today()}: {model.tokens} tokens per reply at {model.rate:g} tokens/s, "
        f"first token after {model.first_token:g} s; time scaled ×{args.scale:g}; "
        f"figures in platform seconds\n"
    )
    print(HEADER)
    rows: list[dict[str, Any]] = []
    for scenario in scenarios:
        runner = run_discord if scenario.platform == "discord" else run_slack
        for contender in args.contenders or CONTENDERS:
            row = await runner(scenario, contender, model, clock, args.timeout)
            print("| " + " | ".join(row.cells()) + " |", flush=True)
            rows.append(row.summary())
    return rows


def run_many_scenario(args: argparse.Namespace) -> dict[str, Any]:
    from bench.many import report, run_many

    result = run_many(args.many, args.tokens, args.many_rate)
    print("\n" + report(result, args.tokens, args.many_rate))
    return dataclasses.asdict(result)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--discord", type=int, nargs="*", default=[1, 5, 20])
    parser.add_argument("--slack", type=int, nargs="*", default=[1, 10, 50])
    parser.add_argument("--slack-native", type=int, nargs="*", default=[1, 10, 50])
    parser.add_argument("--tokens", type=int, default=300, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=30.0, help="tokens per second")
    parser.add_argument("--first-token", type=float, default=0.5, help="seconds")
    parser.add_argument("--scale", type=float, default=10.0, help="time runs this much faster")
    parser.add_argument(
        "--timeout", type=float, default=1200.0, help="platform seconds before a run is cut"
    )
    parser.add_argument("--contenders", nargs="*", choices=CONTENDERS)
    parser.add_argument(
        "--many", type=int, default=2000, help="replies in the one-process scale run (0: skip)"
    )
    parser.add_argument("--many-rate", type=float, default=20.0, help="tokens/s in that run")
    parser.add_argument("--json", help="also write the pacing figures to this file")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"date": str(datetime.date.today()), "args": vars(args)}
    if args.discord or args.slack or args.slack_native:
        out["rows"] = asyncio.run(main_async(args))
    if args.many:
        out["many"] = run_many_scenario(args)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(out, file, indent=1)


if __name__ == "__main__":
    main()
