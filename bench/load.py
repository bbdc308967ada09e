"""Load: many concurrent mentions through the real service, measured at the fake platforms.

The matrix (issue "load"): Slack, one workspace, 20 and 50 (and, with
``--big``, 200) concurrent mentions, in one channel and spread over 20
channels, with native streaming (``SLACK_NATIVE_STREAMING=auto``, the workspace
has the API) and post+edit (``off``), each with one replica and with three
replicas sharing one Redis; Discord, 5, 20 and 50 concurrent replies in one
channel, to mentions and to ``/ask``.

What runs, per cell, fresh:

- the fake platform of the tests (``tests/fakes/slack_server/`` or
  ``discord_server/``) and a model server (below) in this process, on
  127.0.0.1;
- each replica as its own OS process (``bench.load_replica``): the production
  service (``SlackPlatform`` over Socket Mode, or ``DiscordPlatform`` over the
  gateway) with the real slack_bolt/slack_sdk or discord.py, the real
  responder, engine, sinks and the real ``RedisBudget`` on ``REDIS_URL``
  (default redis://127.0.0.1:6379/0), under a key prefix of its own per cell;
  replicas of one cell share the prefix, hence one budget;
- each Slack replica first gets one ignored event (a plain message), so that
  Bolt's authorization (one ``auth.test``, then cached) is behind it as in a
  replica that has been running; ``--cold`` leaves it out (a cold replica
  calls ``auth.test`` once per event of the burst: 200 at once get 429s);
- every mention is delivered at once (Slack: one Socket Mode envelope each,
  round robin over the replicas' connections; Discord: MESSAGE_CREATE or an
  ``/ask`` INTERACTION_CREATE), each by its own user, each a conversation of
  its own.

Everything is measured on the platform's side, from the fakes' records: the
event time is when the fake sent the envelope (Slack) or dispatched the
message or interaction (Discord); a call's time is when the fake received
it. *First visible* is the first call a user can see for that reply: Slack,
a non-empty ``assistant.threads.setStatus`` in the thread, or the first bot
message (posted or stream started) in it; Discord, the typing call in the
channel (channel-wide: whoever asked sees it), the ``/ask`` deferral, or the
first message. *First text* is the first message revision showing model
text. *Staleness* is, for every model chunk, the time from when the model
server wrote it to the first revision of the reply's messages (joined in
order) showing all text up to it. *Exact* is the reply's final text,
joined over its messages, equal to what the model wrote.

The model server (``TimedModel``) streams OpenAI Chat Completions SSE (bytes
built by ``tests.fakes.streams``, one event per write), like the fake LLM
server, and also notes when each event went out, which the staleness needs.

Time is compressed ×``--scale`` (10): the fakes' windows, the model's delays,
and every duration that paces the service (its budgets, edit interval, stream
roll-over; see ``bench.load_replica``) are divided by the scale, and every
measured duration is multiplied by it, so figures are in platform seconds.
The fakes' Retry-After (whole seconds, at least 1) and Discord's 3 s
interaction deadline are not scaled, nor is latency or CPU, which look ×10
longer.

Fair-share interval (per cell): the binding update budget's interval × the
replies sharing it, at least the edit interval (1 s). Slack post+edit:
``chat.update``'s; native: ``chat.appendStream``'s, or, when replies used
both, N over the two budgets' combined rate; Discord mentions in one channel:
``discord:channel:*``; ``/ask``: each reply has its own interaction budget,
so N over ``discord:global``'s rate. Targets, checked per cell: first
visible p99 < 2 s; first text p99 ≤ the model's first token + one fair-share
interval; staleness p50 ≤ 1.5× the fair-share interval; zero 429s; 100 %
exact.

Run: ``python -m bench.load`` (``--help``); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from bots.cli import platform_limits
from bots.discord.format import ZWSP
from core.reply.budget import Limit, LimitTable, RateLimit, Window
from core.reply.observe import percentile
from tests.fakes.discord_server import (
    CHANNEL_ID,
    FLAG_LOADING,
    GUILD_ID,
    FakeDiscord,
    FakeUser,
    MessageRecord,
    RateLimits,
)
from tests.fakes.discord_server import Limit as DiscordLimit
from tests.fakes.slack_server import DEFAULT_LIMITS as SLACK_FAKE_LIMITS
from tests.fakes.slack_server import STREAM_METHODS, FakeSlack, Message
from tests.fakes.slack_server import Limit as SlackLimit
from tests.fakes.streams import chat_stream, split_events

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIMITS = platform_limits()
"""Every adapter's default rate limits, as ``chatrelay run`` has them."""
WORDS = ("alp", "bay", "cog", "dew", "elm", "fir", "gum", "hut", "ivy", "jam", "kit", "log")
"""Short plain words: 300 of them fit one Discord message (2,000 characters)."""
QUESTION = re.compile(r"load question (\d+)")
EDIT_INTERVAL = 1.0
"""The production edit interval (``SLACK_EDIT_INTERVAL``, ``DISCORD_EDIT_INTERVAL``)."""


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Model:
    tokens: int = 300
    rate: float = 30.0
    first_token: float = 0.5
    chunk_tokens: int = 1
    """Tokens per SSE event (1: one word each, as providers mostly send)."""

    def text(self, reply: int) -> list[str]:
        rng = random.Random(reply)
        return [("" if i == 0 else " ") + rng.choice(WORDS) for i in range(self.tokens)]

    def chunks(self, reply: int) -> list[str]:
        words = self.text(reply)
        n = self.chunk_tokens
        return ["".join(words[i : i + n]) for i in range(0, len(words), n)]


@dataclass
class Sent:
    """One model stream as the server wrote it: each chunk's end offset in the
    reply's text and when it went out (``time.monotonic``)."""

    started: float
    ends: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class TimedModel:
    """An OpenAI Chat Completions server on 127.0.0.1 answering "load question N"
    with reply N's text, one SSE event per write after ``first_token``, then one
    every ``chunk_tokens / rate`` seconds (divided by ``scale``), noting when each
    went out. The role chunk goes with the first text chunk, and the finish,
    usage and ``[DONE]`` with the last, so the pauses fall only between chunks."""

    def __init__(self, model: Model, scale: float) -> None:
        self.model = model
        self.scale = scale
        self.sent: dict[int, Sent] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> TimedModel:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        asked = " ".join(str(m.get("content", "")) for m in body.get("messages", [])[-1:])
        found = QUESTION.search(asked)
        if found is None:
            return web.json_response({"error": {"message": "unknown question"}}, status=400)
        reply = int(found.group(1))
        chunks = self.model.chunks(reply)
        pieces = split_events(chat_stream(chunks))
        assert len(pieces) == len(chunks) + 4, "role, chunks, finish, usage, [DONE]"
        writes = pieces[1:-3]
        writes[0] = pieces[0] + writes[0]
        writes[-1] = writes[-1] + b"".join(pieces[-3:])
        record = Sent(time.monotonic())
        self.sent[reply] = record
        delay = self.model.chunk_tokens / self.model.rate / self.scale
        await asyncio.sleep(self.model.first_token / self.scale)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        end = 0
        for index, (chunk, write) in enumerate(zip(chunks, writes, strict=True)):
            if index:
                await asyncio.sleep(delay)
            end += len(chunk)
            record.ends.append(end)
            record.times.append(time.monotonic())
            await response.write(write)
        await response.write_eof()
        return response


# --------------------------------------------------------------------------- replicas


class Replica:
    """``bench.load_replica`` in its own OS process."""

    def __init__(self, config: dict[str, Any], log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.load_replica",
                json.dumps(self.config),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if line.strip() != b"READY":
            raise RuntimeError(f"a replica did not start; see {self.log}")

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def replicas(configs: list[dict[str, Any]], log: Path) -> AsyncIterator[list[Replica]]:
    started = [Replica(c, log) for c in configs]
    try:
        await asyncio.gather(*(r.start() for r in started))
        yield started
    finally:
        await asyncio.gather(*(r.stop() for r in started))


async def forget_prefix(redis_url: str, prefix: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
    finally:
        await redis.aclose()


# --------------------------------------------------------------------------- figures


@dataclass
class ReplyFigures:
    first_visible: float | None = None
    first_text: float | None = None
    staleness: list[float] = field(default_factory=list)
    exact: bool = False
    ended: bool = False
    native: bool = False
    model_seconds: float | None = None
    first_token: float | None = None
    """Event → the model server wrote the reply's first text: the floor of first text."""


@dataclass
class Cell:
    platform: str
    replies: int
    where: str = "1 channel"
    """Slack: ``1 channel`` or ``20 channels``."""
    mode: str = "post+edit"
    """Slack: ``native`` or ``post+edit``; Discord: ``mention`` or ``/ask``."""
    replicas: int = 1

    @property
    def name(self) -> str:
        if self.platform == "slack":
            return f"Slack, {self.where}, {self.mode}"
        return f"Discord, 1 channel, {'mentions' if self.mode == 'mention' else '/ask'}"


@dataclass
class Result:
    cell: Cell
    replies: list[ReplyFigures]
    rate_limited: dict[str, int]
    calls: int
    fair_share: float
    real_seconds: float
    notes: list[str] = field(default_factory=list)

    def figure(self, name: str, q: float) -> float:
        if name == "staleness":
            values = [s for r in self.replies for s in r.staleness]
        else:
            values = [v for r in self.replies if (v := getattr(r, name)) is not None]
        return percentile(values, q) if values else float("nan")

    @property
    def exact(self) -> float:
        return sum(r.exact for r in self.replies) / len(self.replies)

    @property
    def missing(self) -> dict[str, int]:
        """Replies without a first visible call, or without text."""
        return {
            "visible": sum(r.first_visible is None for r in self.replies),
            "text": sum(r.first_text is None for r in self.replies),
        }

    def targets(self) -> dict[str, bool]:
        n429 = sum(self.rate_limited.values())
        missing = self.missing
        return {
            "visible": missing["visible"] == 0 and self.figure("first_visible", 0.99) < 2.0,
            "text": missing["text"] == 0
            and self.figure("first_text", 0.99)
            <= self.figure("first_token", 0.99) + self.fair_share,
            "stale": self.figure("staleness", 0.5) <= 1.5 * self.fair_share,
            "429": n429 == 0,
            "exact": self.exact == 1.0,
        }

    def cells(self) -> list[str]:
        def pair(name: str) -> str:
            return f"{self.figure(name, 0.5):.2f} / {self.figure(name, 0.99):.2f}"

        n = len(self.replies)
        marks = " ".join(f"{k} {'PASS' if ok else 'MISS'}" for k, ok in self.targets().items())
        native = sum(r.native for r in self.replies)
        model = [r.model_seconds for r in self.replies if r.model_seconds is not None]
        n429 = sum(self.rate_limited.values())
        limited = ", ".join(f"{k} {v}" for k, v in sorted(self.rate_limited.items()))
        return [
            self.cell.name,
            str(self.cell.replicas),
            str(n),
            pair("first_visible"),
            pair("first_token"),
            pair("first_text"),
            pair("staleness"),
            f"{n429}" + (f" ({limited})" if n429 else ""),
            f"{self.calls / n:.1f}",
            f"{self.exact * 100:.0f} %",
            f"{self.fair_share:.1f}",
            f"{native}/{n}" if self.cell.platform == "slack" else "",
            f"{percentile(model, 0.5):.1f}" if model else "",
            f"{self.real_seconds:.0f}",
            marks,
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "cell": asdict(self.cell),
            "name": self.cell.name,
            "first_visible": [self.figure("first_visible", q) for q in (0.5, 0.99)],
            "first_token": [self.figure("first_token", q) for q in (0.5, 0.99)],
            "first_text": [self.figure("first_text", q) for q in (0.5, 0.99)],
            "staleness": [self.figure("staleness", q) for q in (0.5, 0.99)],
            "rate_limited": self.rate_limited,
            "calls_per_reply": self.calls / len(self.replies),
            "exact": self.exact,
            "fair_share": self.fair_share,
            "native": sum(r.native for r in self.replies),
            "missing": self.missing,
            "targets": self.targets(),
            "real_seconds": self.real_seconds,
            "notes": self.notes,
        }


HEADER = (
    "| cell | replicas | mentions | first visible p50 / p99 s | model's first token p50 / p99 s "
    "| first text p50 / p99 s | staleness p50 / p99 s | 429s | calls/reply | exact "
    "| fair share s | native | model s | real s | targets |\n"
    "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"
)


def interval(limit: RateLimit | None) -> float:
    """Seconds between calls at a budget's sustained rate."""
    if isinstance(limit, Limit):
        return limit.interval
    if isinstance(limit, Window):
        return limit.per / limit.count
    raise ValueError("no budget for this scope")


def staleness(sent: Sent, shown: list[tuple[float, int]], scale: float) -> list[float]:
    """Each chunk's delay from its write to the first time ``shown`` (time, length of
    the expected text shown, non-decreasing) covers it."""
    out: list[float] = []
    j = 0
    for end, wrote in zip(sent.ends, sent.times, strict=True):
        while j < len(shown) and shown[j][1] < end:
            j += 1
        if j == len(shown):
            break
        out.append(max(0.0, shown[j][0] - wrote) * scale)
    return out


def shared_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def shown_timeline(
    revisions: list[tuple[float, int, str]], expected: str
) -> tuple[list[tuple[float, int]], str]:
    """From (time, message index, model text of that message then), the running
    length of the expected text the messages, joined in order, show (kept at its
    maximum), and the final joined text."""
    current: dict[int, str] = {}
    best = 0
    timeline: list[tuple[float, int]] = []
    for when, index, text in sorted(revisions, key=lambda r: r[0]):
        current[index] = text
        joined = "".join(current[k] for k in sorted(current))
        best = max(best, shared_prefix(joined, expected))
        timeline.append((when, best))
    final = "".join(current[k] for k in sorted(current))
    return timeline, final


# --------------------------------------------------------------------------- Slack


def slack_model_text(message: Message, method: str, markdown: str, blocks: Any, text: str) -> str:
    """The model text one revision of a message shows."""
    if method in STREAM_METHODS or (message.source == "stream" and method == "user_stops_stream"):
        return markdown
    if blocks:
        return "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "markdown")
    return text if method != "add_message" else ""


def slack_ended(slack: FakeSlack, channel: str, thread: str) -> bool:
    messages = [m for m in slack.thread(channel, thread) if m.bot_id == slack.bot_id]
    if not messages or any(m.streaming for m in messages):
        return False
    return not any(
        b.get("block_id") == "chatrelay_controls" for m in messages for b in m.blocks or []
    )


async def run_slack(cell: Cell, opts: Options) -> Result:
    scale = opts.scale
    n = cell.replies
    channels = 1 if cell.where == "1 channel" else 20
    prefix = f"chatrelay-bench-load:{uuid.uuid4().hex[:10]}:"
    limits = {
        method: None if lim is None else SlackLimit(lim.count, lim.window / scale)
        for method, lim in SLACK_FAKE_LIMITS.items()
    }
    async with (
        FakeSlack(
            team_id="T1",
            bot_user_id="UBOT",
            bot_id="BBOT",
            native_streaming=True,
            limits=limits,
            stream_ttl=300.0 / scale,
        ) as slack,
        TimedModel(opts.model, scale) as model,
    ):
        config = {
            "platform": "slack",
            "redis_url": opts.redis_url,
            "prefix": prefix,
            "scale": scale,
            "model_url": model.base_url,
            "api_url": slack.api_url,
            "native": "auto" if cell.mode == "native" else "off",
            "rules_file": str(opts.rules_file),
        }
        try:
            async with replicas([config] * cell.replicas, opts.log):
                await slack.wait_connected(timeout=30, count=cell.replicas)
                if not opts.cold:
                    # One event each (round robin), ignored, so that Bolt's authorization
                    # (an auth.test, then cached) is done as in a replica already running.
                    for _ in range(cell.replicas):
                        warm = slack.user_message("CWARM", "warm-up", user="UWARM")
                        await slack.deliver_socket(warm, timeout=30)
                began = time.perf_counter()
                where = [f"C{(i % channels) + 1:04d}" for i in range(n)]
                events = [
                    slack.user_message(
                        where[i], f"load question {i}", user=f"U{i + 1:05d}", mention=True
                    )
                    for i in range(n)
                ]
                deliveries = await asyncio.gather(
                    *(
                        slack.deliver_socket(e, event_id=f"Ev{i:05d}", timeout=60)
                        for i, e in enumerate(events)
                    )
                )
                threads = [(where[i], str(e["ts"])) for i, e in enumerate(events)]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(opts.cutoff / scale):
                        while not all(slack_ended(slack, c, t) for c, t in threads):  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                real = time.perf_counter() - began
        finally:
            await forget_prefix(opts.redis_url, prefix)
        first_event = min(d.sent_at for d in deliveries)
        figures: list[ReplyFigures] = []
        for i, ((channel, thread), delivery) in enumerate(zip(threads, deliveries, strict=True)):
            event = delivery.sent_at
            expected = "".join(opts.model.text(i))
            fig = ReplyFigures()
            messages = [m for m in slack.thread(channel, thread) if m.bot_id == slack.bot_id]
            visible = [s.time for s in slack.statuses.get((channel, thread), []) if s.status]
            visible += [m.history[0].time for m in messages if m.history]
            if visible:
                fig.first_visible = (min(visible) - event) * scale
            revisions = [
                (r.time, k, slack_model_text(m, r.method, r.markdown, r.blocks, r.text))
                for k, m in enumerate(messages)
                for r in m.history
            ]
            texts = [when for when, _, text in revisions if text]
            if texts:
                fig.first_text = (min(texts) - event) * scale
            timeline, final = shown_timeline(revisions, expected)
            sent = model.sent.get(i)
            if sent is not None:
                fig.staleness = staleness(sent, timeline, scale)
                if sent.times:
                    fig.model_seconds = (sent.times[-1] - sent.started) * scale
                    fig.first_token = (sent.times[0] - event) * scale
            fig.ended = slack_ended(slack, channel, thread)
            fig.exact = fig.ended and final == expected
            fig.native = bool(messages) and messages[0].history[0].method == "chat.startStream"
            figures.append(fig)
        after = [c for c in slack.calls if c.time >= first_event]
        calls = [c for c in after if c.method not in ("auth.test", "apps.connections.open")]
        limited: dict[str, int] = {}
        for c in after:
            if c.status == 429 and c.injected is None:
                limited[c.method] = limited.get(c.method, 0) + 1
        table = LimitTable(DEFAULT_LIMITS)
        update = 1 / interval(table.lookup("slack:T1:chat.update"))
        append = 1 / interval(table.lookup("slack:T1:chat.appendStream"))
        natives = sum(f.native for f in figures)
        rate = (append if natives else 0.0) + (update if natives < n else 0.0)
        return Result(
            cell=cell,
            replies=figures,
            rate_limited=limited,
            calls=len(calls),
            fair_share=max(EDIT_INTERVAL, n / rate),
            real_seconds=real,
        )


# --------------------------------------------------------------------------- Discord


def discord_model_text(content: str) -> str:
    """The model text of a chatrelay Discord message: state lines (``-# ``) dropped."""
    lines = content.split("\n")
    while lines and lines[-1].startswith("-# "):
        lines.pop()
    return "\n".join(lines).replace(ZWSP, "")


def discord_finished(rec: MessageRecord) -> bool:
    return not rec.flags & FLAG_LOADING and rec.components == [] and "writing…" not in rec.content


def scaled_discord_limits(scale: float) -> RateLimits:
    return RateLimits(
        channel_messages=DiscordLimit(5, 5.0 / scale),
        interaction_webhook=DiscordLimit(5, 2.0 / scale),
        global_per_second=int(50 * scale),
        route_default=DiscordLimit(50, 1.0 / scale),
    )


async def run_discord(cell: Cell, opts: Options) -> Result:
    scale = opts.scale
    n = cell.replies
    ask = cell.mode == "/ask"
    prefix = f"chatrelay-bench-load:{uuid.uuid4().hex[:10]}:"
    async with (
        FakeDiscord(limits=scaled_discord_limits(scale)) as fake,
        TimedModel(opts.model, scale) as model,
    ):
        config = {
            "platform": "discord",
            "redis_url": opts.redis_url,
            "prefix": prefix,
            "scale": scale,
            "model_url": model.base_url,
            "api_url": fake.api_url,
            "gateway_url": fake.gateway_url,
            "token": fake.bot_token,
            "guild_ids": [GUILD_ID],
            "rules_file": str(opts.rules_file),
        }
        users = [FakeUser(1_300_000_000_000_000_000 + i, f"user{i}") for i in range(n)]
        try:
            async with replicas([config], opts.log):
                await fake.wait_ready(timeout=30)
                began = time.perf_counter()
                events: list[float] = []
                groups: list[list[MessageRecord]] = []
                if ask:
                    interactions = await asyncio.gather(
                        *(
                            fake.inject_slash_command(
                                "ask", {"prompt": f"load question {i}"}, user=users[i]
                            )
                            for i in range(n)
                        )
                    )
                    events = [r.created_at for r in interactions]

                    def replies_of() -> list[list[MessageRecord]]:
                        return [
                            ([r.original] if r.original else []) + list(r.followups)
                            for r in interactions
                        ]
                else:
                    asked = await asyncio.gather(
                        *(
                            fake.inject_message(
                                CHANNEL_ID, f"load question {i}", users[i], mentions_bot=True
                            )
                            for i in range(n)
                        )
                    )
                    events = [r.created_at for r in asked]
                    index = {r.id: i for i, r in enumerate(asked)}

                    def replies_of() -> list[list[MessageRecord]]:
                        out: list[list[MessageRecord]] = [[] for _ in range(n)]
                        for m in fake.channel_messages(CHANNEL_ID):
                            ref = m.message_reference or {}
                            if m.author.id == fake.bot.id and "message_id" in ref:
                                i = index.get(int(ref["message_id"]), -1)
                                if i >= 0:
                                    out[i].append(m)
                        return out

                def ended() -> bool:
                    return all(g and all(discord_finished(m) for m in g) for g in replies_of())

                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(opts.cutoff / scale):
                        while not ended():  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                real = time.perf_counter() - began
                groups = replies_of()
        finally:
            await forget_prefix(opts.redis_url, prefix)
        first_event = min(events)
        calls = [c for c in fake.calls if c.time >= first_event]
        typing = sorted(
            c.time for c in calls if c.route.endswith("/typing") and c.status in (200, 204)
        )
        figures: list[ReplyFigures] = []
        for i, (event, messages) in enumerate(zip(events, groups, strict=True)):
            expected = "".join(opts.model.text(i))
            fig = ReplyFigures()
            visible = [m.history[0].time for m in messages if m.history]
            if ask:
                token = interactions[i].token
                visible += [
                    c.time
                    for c in calls
                    if c.route.startswith("interactions/") and token in c.path and c.status < 300
                ]
            else:
                visible += [t for t in typing if t >= event][:1]
            if visible:
                fig.first_visible = (min(visible) - event) * scale
            revisions = [
                (r.time, k, discord_model_text(r.content))
                for k, m in enumerate(messages)
                for r in m.history
            ]
            texts = [when for when, _, text in revisions if text]
            if texts:
                fig.first_text = (min(texts) - event) * scale
            timeline, final = shown_timeline(revisions, expected)
            sent = model.sent.get(i)
            if sent is not None:
                fig.staleness = staleness(sent, timeline, scale)
                if sent.times:
                    fig.model_seconds = (sent.times[-1] - sent.started) * scale
                    fig.first_token = (sent.times[0] - event) * scale
            fig.ended = bool(messages) and all(discord_finished(m) for m in messages)
            fig.exact = fig.ended and final == expected
            figures.append(fig)
        limited: dict[str, int] = {}
        for c in calls:
            if c.status == 429 and c.injected is None:
                limited[c.route] = limited.get(c.route, 0) + 1
        table = LimitTable(DEFAULT_LIMITS)
        if ask:
            own = interval(table.lookup("discord:interaction:1"))
            shared = interval(table.lookup("discord:global")) * n
            fair = max(EDIT_INTERVAL, own, shared)
        else:
            fair = max(EDIT_INTERVAL, interval(table.lookup(f"discord:channel:{CHANNEL_ID}")) * n)
        return Result(
            cell=cell,
            replies=figures,
            rate_limited=limited,
            calls=len(calls),
            fair_share=fair,
            real_seconds=real,
        )


# --------------------------------------------------------------------------- the matrix


@dataclass
class Options:
    scale: float
    model: Model
    redis_url: str
    cutoff: float
    rules_file: Path
    log: Path
    cold: bool = False


def matrix(args: argparse.Namespace) -> list[Cell]:
    cells: list[Cell] = []
    if args.platform in ("slack", "all"):
        sizes = args.sizes or [20, 50]
        if args.big and 200 not in sizes:
            sizes = [*sizes, 200]
        for replicas_ in args.replicas:
            for n in sizes:
                for where in ("1 channel", "20 channels"):
                    for mode in ("native", "post+edit"):
                        cells.append(Cell("slack", n, where, mode, replicas_))
    if args.platform in ("discord", "all"):
        for n in args.sizes or [5, 20, 50]:
            for mode in ("mention", "/ask"):
                cells.append(Cell("discord", n, mode=mode))
    if args.only:
        cells = [c for c in cells if args.only in c.name]
    return cells


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    model = Model(args.tokens, args.rate, args.first_token, args.chunk_tokens)
    with tempfile.TemporaryDirectory(prefix="chatrelay-load-") as tmp:
        rules = Path(tmp) / "channels.toml"
        rules.write_text("")
        log = Path(args.log) if args.log else Path(tmp) / "replicas.log"
        opts = Options(args.scale, model, args.redis_url, args.cutoff, rules, log, args.cold)
        print(
            f"{datetime.date.today()}, commit {commit()}: {model.tokens} tokens per reply "
            f"({model.chunk_tokens} per SSE event) at {model.rate:g} tokens/s, first token "
            f"after {model.first_token:g} s; time scaled ×{args.scale:g}; figures in "
            "platform seconds, measured at the fake platform\n",
            flush=True,
        )
        print(HEADER, flush=True)
        out: list[dict[str, Any]] = []
        for cell in matrix(args):
            runner = run_slack if cell.platform == "slack" else run_discord
            try:
                result = await runner(cell, opts)
            except Exception as exc:  # one broken cell must not hide the others
                print(f"| {cell.name} | {cell.replicas} | {cell.replies} | failed: {exc!r} |")
                if log.exists():
                    print(log.read_text()[-3000:], file=sys.stderr)
                continue
            print("| " + " | ".join(result.cells()) + " |", flush=True)
            out.append(result.summary())
        return out


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):  # e.g. run from a `git archive` export
        return os.environ.get("BENCH_COMMIT", "unknown")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--platform", choices=["slack", "discord", "all"], default="all")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        help="concurrent mentions per cell (default: Slack 20 50, Discord 5 20 50)",
    )
    parser.add_argument("--big", action="store_true", help="add the 200-mention Slack cells")
    parser.add_argument(
        "--replicas", type=int, nargs="*", default=[1, 3], help="Slack replicas per cell"
    )
    parser.add_argument(
        "--only", help='run only the cells whose name contains this, e.g. "20 channels, native"'
    )
    parser.add_argument("--scale", type=float, default=10.0, help="time runs this much faster")
    parser.add_argument("--tokens", type=int, default=300, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=30.0, help="tokens per second")
    parser.add_argument("--first-token", type=float, default=0.5, help="seconds")
    parser.add_argument("--chunk-tokens", type=int, default=1, help="tokens per SSE event")
    parser.add_argument(
        "--cutoff", type=float, default=1500.0, help="platform seconds before a cell is cut"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="Slack: no warm-up event, the burst reaches replicas that never authorized",
    )
    parser.add_argument("--log", help="the replicas' stderr (default: a temporary file)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    rows = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as file:
            json.dump({"date": str(datetime.date.today()), "args": vars(args), "rows": rows}, file)


if __name__ == "__main__":
    main()
