"""The production path at 2,000 replies: chatrelay's own CPU, Redis traffic, memory, staleness.

Issue "cost": 2,000 concurrent replies through the real Discord service
(``DiscordPlatform``: discord.py over the gateway, ``Responder`` with its dedupe,
quota, conversation lock and store, ``RedisBudget`` behind ``FairBudget``, the
in-flight registry with its heartbeats, the cancel bus), on a real Redis,
streaming into the fake Discord server, with the model served over HTTP.

Three OS processes besides Redis, so that each one's CPU is its own:

- **this process runs chatrelay** exactly as ``chatrelay run`` builds it
  (``open_state``, ``open_model``, ``DiscordPlatform.serve``), with the default limits
  and edit interval, in real time (nothing scaled);
- **the fake Discord** (``bench.production_peers discord``), with Discord's
  limits, not scaled;
- **the model** (``bench.production_peers model``): ``bench.load.TimedModel``,
  OpenAI Chat Completions SSE at ``--rate`` tokens/s per reply,
  ``--chunk-tokens`` tokens per write (the issue allows several, so the fakes
  stay light), noting when each write went out.

The replies are ``/ask`` commands, each from its own user (its own
conversation), over ``--channels`` channels. Not mentions: Discord's global
limit (50 requests/s per bot, which the ``discord:global`` budget keeps under)
binds every channel message a mention's reply sends, so 2,000 mention replies
would each get one update every 50 s; interaction webhooks are exempt from it,
and each ``/ask`` has its own budget (``discord:interaction:*``), so the
per-reply limits are the ones that bind, as the issue's targets assume.

Measured over the streaming phase, from the burst of interactions until every
reply has ended at the fake and none is active here:

- chatrelay's CPU: this process's ``getrusage`` (user + system), per 1,000
  tokens the model wrote, and as cores (CPU s / wall s);
- Redis round trips and commands, counted on the client by ``bench.redis_count``
  (labelled per command and Lua script), and the server's ``INFO`` deltas,
  divided by the platform updates the fake accepted; the *steady path* is the
  window in which every reply already shows text and none has ended;
- memory: peak RSS of this process (sampled every 0.2 s) minus RSS just before
  the burst, divided by the replies active at the peak;
- staleness, first visible (the deferral) and first text, at the fake (see
  ``bench.production_peers``).

Run: ``python -m bench.production`` (``--help``); ``--replies 200`` for a quick
run; ``--profile`` adds a cProfile of the streaming phase (which slows it: its
CPU figures are then not the target's). ``--tracemalloc [SECONDS]`` traces
this process's Python allocations from just before the burst and, SECONDS
after it (default 10, while the replies stream), prints what is still held
per active reply: by source (the first frame, from the allocation outwards, in
an installed package or a chatrelay package; else the stdlib module that
allocated), by line, and the largest tracebacks. Tracing slows the process
several times over and adds its own memory: CPU and RSS figures are then not
the target's, and a burst misses deferrals, so spread it (``--replies 200
--ramp 10 --tracemalloc 14``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import gc
import json
import logging
import os
import pstats
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.load import forget_prefix, interval
from bench.production_peers import cpu_seconds
from bench.redis_count import RedisCounter
from core.reply.budget import LimitTable, RateLimit

ROOT = Path(__file__).resolve().parent.parent
Json = dict[str, Any]

CPU_TARGET = 1.0
"""Cores: the whole chatrelay process under one."""
MEMORY_TARGET = 100 * 1024
"""Bytes per active reply."""
ROUND_TRIP_TARGET = 1.0
MIN_STEADY = 2.0
"""Seconds a steady window must last to judge the round trips in it."""
"""Redis round trips per platform update on the steady path (single Redis)."""
IDLE = 90.0
"""Seconds without any call from the bot after which the replies left are given up."""
STALE_SLACK = 1.0
"""p99 staleness may exceed the interval between two updates of a reply by this."""


def default_limits() -> dict[str, RateLimit]:
    """The default limit table ``chatrelay run`` hands to ``open_state``: the
    adapters' own, merged (``bots.cli.platform_limits``)."""
    from bots.cli import platform_limits

    return dict(platform_limits())


# --------------------------------------------------------------------------- processes


class Peer:
    """A ``bench.production_peers`` process, answering one JSON line per command."""

    def __init__(self, kind: str, config: Json, log: Path) -> None:
        self.kind, self.config, self.log = kind, config, log
        self.proc: asyncio.subprocess.Process | None = None
        self.hello: Json = {}

    async def start(self) -> Peer:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.production_peers",
                self.kind,
                json.dumps(self.config),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                limit=1 << 24,
            )
        self.hello = await self._answer(60)
        return self

    async def call(self, cmd: str, timeout: float = 120.0, **args: Any) -> Json:  # noqa: ASYNC109
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._answer(timeout)

    async def _answer(self, timeout: float) -> Json:  # noqa: ASYNC109
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} process ended; see {self.log}")
        answer: Json = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the {self.kind} process failed: {answer['error']}")
        return answer

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis(log: Path) -> Any:
    """A redis-server of its own on a loopback port, no persistence: its INFO
    counts only chatrelay, and the shared Redis of other engineers' tests is
    left alone."""
    port = free_port()
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--maxclients", "10000"),
            ],
            stdout=err,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {log}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


# --------------------------------------------------------------------------- measuring


def rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Sampler:
    """Peak RSS and the most replies active at once, sampled every ``every`` s."""

    active: Any
    every: float = 0.2
    peak_rss: int = 0
    peak_active: int = 0
    cpu: list[tuple[float, float]] = field(default_factory=list)
    """(``time.monotonic()``, this process's CPU seconds) at every sample."""

    async def run(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, rss_bytes())
            self.peak_active = max(self.peak_active, self.active.count)
            self.cpu.append((time.monotonic(), cpu_seconds()))
            await asyncio.sleep(self.every)

    def saturated(self, at_least: float = 0.9) -> float:
        """Seconds during which this process ran at ``at_least`` cores or more."""
        pairs = zip(self.cpu, self.cpu[1:], strict=False)
        return sum(t1 - t0 for (t0, c0), (t1, c1) in pairs if c1 - c0 >= at_least * (t1 - t0))

    def cores(self, start: float, end: float) -> float:
        """CPU seconds per second between the samples nearest ``start`` and ``end``."""
        inside = [(t, c) for t, c in self.cpu if start <= t <= end]
        if len(inside) < 2:
            return float("nan")
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0)


@dataclass
class Degraded:
    """When the shared budget ran per-process (Redis calls missing their bound, as
    a saturated process's do): round trips counted then are not the design's."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    since: float | None = None

    def __call__(self, degraded: bool) -> None:
        now = time.monotonic()
        if degraded and self.since is None:
            self.since = now
        elif not degraded and self.since is not None:
            self.spans.append((self.since, now))
            self.since = None

    def seconds(self, start: float, end: float) -> float:
        """Seconds of [start, end] during which budgets were per-process."""
        spans = [*self.spans, (self.since, end)] if self.since is not None else self.spans
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans)


class LogCounter(logging.Handler):
    """Warnings and errors per logger, so a run that degraded says so."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}"] += 1


async def redis_info(url: str) -> Json:
    client = Redis.from_url(url)
    try:
        stats = await client.info("stats")
        commandstats = await client.info("commandstats")
    finally:
        await client.aclose()
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in commandstats.items()}
    return {"total": int(stats["total_commands_processed"]), "calls": calls}


@dataclass
class Figures:
    args: argparse.Namespace
    wall: float
    phase: tuple[float, float]
    """``time.monotonic()`` at the burst's first event and when the last reply ended."""
    cpu: float
    peers_cpu: dict[str, float]
    report: Json
    trips: Counter[str]
    commands: int
    steady_trips: Counter[str]
    steady_commands: int
    server_commands: int
    server_calls: dict[str, int]
    rss_base: int
    sampler: Sampler
    warnings: Counter[str]
    budget_interval: float
    edit_interval: float
    profiled: bool
    load: tuple[float, float]
    degraded: Degraded
    memory: MemoryProfile | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace, redis_url: str, tmp: Path) -> Figures:
    from bots.discord.limits import interaction_scope
    from bots.discord.service import DiscordPlatform
    from bots.discord.settings import load_discord_settings
    from core.config import load_settings
    from core.llm.model import open_model
    from core.rules import load_rules
    from core.service import ActiveReplies, Responder, Services
    from core.state.settings import load_state_settings
    from core.state.store import open_state

    log = tmp / "peers.log"
    counter = RedisCounter()
    counter.install()
    warnings = LogCounter()
    logging.getLogger().addHandler(warnings)
    model_config = {
        "tokens": args.tokens,
        "rate": args.rate,
        "first_token": args.first_token,
        "chunk_tokens": args.chunk_tokens,
    }
    prefix = f"chatrelay-bench-production:{uuid.uuid4().hex[:10]}:"
    rules = tmp / "channels.toml"
    rules.write_text("")
    discord_peer = Peer("discord", {"channels": args.channels}, log)
    model_peer = Peer("model", model_config, log)
    await asyncio.gather(discord_peer.start(), model_peer.start())
    hello = discord_peer.hello
    try:
        settings = load_discord_settings(
            discord_bot_token=hello["token"],
            discord_api_url=hello["api_url"],
            discord_gateway_url=hello["gateway_url"],
            discord_guild_ids=[hello["guild_id"]],
        )
        core = load_settings(llm_base_url=model_peer.hello["base_url"], llm_model="bench-model")
        state_settings = load_state_settings(
            redis_url=redis_url,
            redis_prefix=prefix,
            # Quotas on, far above what the run spends, so every reply checks and records them.
            quota_user_daily_tokens=10**9,
            quota_channel_daily_tokens=10**12,
        )
        active = ActiveReplies()
        limits = default_limits()
        async with (
            open_state(state_settings, defaults=limits) as state,
            open_model(core) as llm,
            DiscordPlatform(settings).serve(
                Services(
                    core, state, Responder(state, llm, active=active), load_rules(rules), active
                )
            ),
        ):
            await discord_peer.call("ready")
            degraded = Degraded()
            state.shared_budget.on_degraded = degraded
            budget = interval(LimitTable(limits).lookup(interaction_scope("x")))
            gc.collect()
            await asyncio.sleep(1.0)  # let the start-up's background work settle
            rss_base = rss_bytes()
            sampler = Sampler(active)
            sampling = asyncio.create_task(sampler.run())
            info0 = await redis_info(redis_url)
            profiler = cProfile.Profile() if args.profile else None
            counter.reset()
            cpu0, wall0 = cpu_seconds(), time.monotonic()
            peers0 = {p.kind: (await p.call("rusage"))["cpu"] for p in (discord_peer, model_peer)}
            if profiler is not None:
                profiler.enable()
            snapshot: asyncio.Task[MemoryProfile] | None = None
            if args.tracemalloc is not None:
                tracemalloc.start(TRACE_FRAMES)
                snapshot = asyncio.create_task(memory_profile(active, args.tracemalloc))
            asked = await discord_peer.call("ask", n=args.replies, ramp=args.ramp)
            waited = await discord_peer.call(
                "wait", timeout=args.cutoff + 60, within=args.cutoff, idle=IDLE
            )
            settle = time.monotonic() + IDLE
            while active.count and time.monotonic() < settle:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the replies' last Redis writes
            if profiler is not None:
                profiler.disable()
            memory = await snapshot if snapshot is not None else None
            if snapshot is not None:
                tracemalloc.stop()
            end = time.monotonic()
            cpu = cpu_seconds() - cpu0
            peers1 = {p.kind: (await p.call("rusage"))["cpu"] for p in (discord_peer, model_peer)}
            sampling.cancel()
            info1 = await redis_info(redis_url)
            load = os.getloadavg()
            dump = tmp / "model.json"
            await model_peer.call("dump", path=str(dump))
            report = await discord_peer.call(
                "report", timeout=600, model_dump=str(dump), **model_config
            )
            if waited["ended"] < args.replies:
                report.setdefault("notes", []).append(
                    f"{args.replies - waited['ended']} replies never ended (still showing "
                    f"'writing…' when the bot had made no call for {IDLE:g} s, or at the "
                    f"{args.cutoff:g} s cutoff)"
                )
            trips, commands = counter.window(wall0, end + 1.0)
            steady_start, steady_end, _ = report["steady"]
            steady_trips, steady_commands = counter.window(steady_start, steady_end)
            if profiler is not None:
                profiler.dump_stats(args.profile)
            return Figures(
                args=args,
                wall=end - asked["first_event"],
                phase=(asked["first_event"], end),
                cpu=cpu,
                peers_cpu={k: peers1[k] - peers0[k] for k in peers0},
                report=report,
                trips=trips,
                commands=commands,
                steady_trips=steady_trips,
                steady_commands=steady_commands,
                server_commands=info1["total"] - info0["total"],
                server_calls={
                    k: v - info0["calls"].get(k, 0)
                    for k, v in info1["calls"].items()
                    if v - info0["calls"].get(k, 0) > 0
                },
                rss_base=rss_base,
                sampler=sampler,
                warnings=warnings.counts,
                budget_interval=budget,
                edit_interval=settings.discord_edit_interval,
                profiled=profiler is not None,
                load=(load[0], load[1]),
                degraded=degraded,
                memory=memory,
                notes=report.get("notes", []),
            )
    finally:
        await asyncio.gather(discord_peer.stop(), model_peer.stop())
        counter.uninstall()
        logging.getLogger().removeHandler(warnings)
        if not args.private_redis:
            await forget_prefix(redis_url, prefix)


# --------------------------------------------------------------------------- tracemalloc

TRACE_FRAMES = 16
"""Frames kept per traced allocation: enough to reach past asyncio and the
libraries' own layers to the code that asked."""


@dataclass
class MemoryProfile:
    """Python allocations traced since just before the burst and still held at
    one moment, with the replies active then."""

    active: int
    at: float
    """Seconds after tracing started."""
    snapshot: tracemalloc.Snapshot


async def memory_profile(active: Any, after: float) -> MemoryProfile:
    start = time.monotonic()
    await asyncio.sleep(after)
    gc.collect()  # only what is reachable: garbage is not what a reply holds
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    return MemoryProfile(active.count, time.monotonic() - start, snapshot)


def source_of(traceback: tracemalloc.Traceback) -> str:
    """Who allocated: the first frame, from the allocation outwards, in an
    installed package (``aiohttp``) or a chatrelay package (``core/reply``);
    else the stdlib module of the allocation itself."""
    for frame in reversed(traceback):  # most recent last
        filename = frame.filename
        if "site-packages/" in filename:
            return filename.split("site-packages/")[1].split("/")[0].removesuffix(".py")
        if filename.startswith(str(ROOT)):
            return "/".join(Path(filename).relative_to(ROOT).parts[:2])
    frame = traceback[-1]
    parent, module = Path(frame.filename).parent.name, Path(frame.filename).stem
    return f"stdlib {parent}/{module}" if parent in ("asyncio", "json") else f"stdlib {module}"


def print_memory(memory: MemoryProfile, top: int = 25) -> None:
    n = max(1, memory.active)
    stats = memory.snapshot.statistics("traceback")
    total = sum(s.size for s in stats)
    print(
        f"\ntracemalloc, {memory.at:.1f} s after the burst, {memory.active} replies active: "
        f"{total / 2**20:.1f} MB held, {total / n / 1024:.1f} KB per active reply\n"
    )
    by_source: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    for stat in stats:
        by_source[source_of(stat.traceback)] += stat.size
        blocks[source_of(stat.traceback)] += stat.count
    print("By source (KB per active reply, blocks per reply):\n")
    for name, size in by_source.most_common(top):
        print(f"- {name}: {size / n / 1024:.2f} KB ({blocks[name] / n:.1f})")
    print(f"\nBy line, top {top} (KB per active reply):\n")
    for stat in memory.snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        kb = stat.size / n / 1024
        print(f"- {frame.filename}:{frame.lineno}: {kb:.2f} KB ({stat.count / n:.1f})")
    print(f"\nLargest tracebacks, top {top // 2}:\n")
    for stat in stats[: top // 2]:
        print(f"{stat.size / n / 1024:.2f} KB per reply ({stat.count / n:.1f} blocks):")
        for line in stat.traceback.format(limit=12):
            print(f"    {line}")


# --------------------------------------------------------------------------- the table


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(f: Figures) -> str:
    r = f.report
    n = r["replies"]
    tokens = r["model_tokens"]
    cores = f.cpu / f.wall
    per_k = f.cpu / tokens * 1000 if tokens else float("nan")
    needed = per_k * n * f.args.rate / 1000
    steady_cores = f.sampler.cores(r["steady"][0], r["steady"][1])
    updates, edits = r["updates"], r["edits"]
    steady_start, steady_end, steady_edits = r["steady"]
    steady_len = steady_end - steady_start
    all_trips = sum(f.trips.values())
    steady_total = sum(f.steady_trips.values())
    per_update = steady_total / steady_edits if steady_len >= MIN_STEADY and steady_edits else None
    # A phase in which Redis calls missed their bounds (a saturated process) has
    # no steady path: its calls queue for connections and its budgets turn
    # per-process, so a window's few round trips say nothing of the design.
    degraded_all = f.degraded.seconds(*f.phase)
    steady_ok = per_update is not None and not degraded_all and per_update <= ROUND_TRIP_TARGET

    def share(trips: Counter[str], word: str) -> int:
        return sum(v for k, v in trips.items() if word in k)

    budget_trips = share(f.steady_trips, "buckets.")
    inflight_trips = share(f.steady_trips, "inflight.")
    other = steady_total - budget_trips - inflight_trips
    if per_update is None:
        steady_trips_text = (
            "no steady window: first texts came after the first replies ended"
            if steady_len < MIN_STEADY
            else "no steady window"
        )
        steady_commands_text = "n/a"
        steady_cores_text = "no steady window"
    else:
        steady_trips_text = (
            f"{per_update:.2f} (budget {budget_trips / steady_edits:.2f}, "
            f"in-flight {inflight_trips / steady_edits:.2f}, other {other / steady_edits:.2f}; "
            f"{steady_edits:,} edits in {steady_len:.1f} s)"
        )
        if degraded_all:
            steady_trips_text += (
                f"; not judged: budgets ran per-process (Redis calls past their bound) "
                f"for {degraded_all:.1f} s of the phase"
            )
        steady_commands_text = f"{f.steady_commands / steady_edits:.2f}"
        steady_cores_text = f"{steady_cores:.2f} in the steady window"
    forgets = share(f.trips, "inflight._FORGET")
    step = max(f.edit_interval, f.budget_interval)
    stale50, stale99, stale_max = r["staleness"]
    vis50, vis99, vis_max = r["first_visible"]
    text50, text99 = r["first_text"]
    grew = max(0, f.sampler.peak_rss - f.rss_base)
    per_reply = grew / max(1, f.sampler.peak_active)
    cpu_note = " (profiled: not the target's figure)" if f.profiled else ""

    def s(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} s"

    rows = [
        (
            "replies, tokens each, rate",
            f"{n} `/ask`, {f.args.tokens} at {f.args.rate:g}/s, "
            f"{f.args.chunk_tokens} per write, {f.args.channels} channels",
            "",
            "",
        ),
        ("streaming phase (burst → last reply ended)", f"{f.wall:.1f} s", "", ""),
        ("replies active at once (peak)", f"{f.sampler.peak_active}", "", ""),
        (
            "chatrelay CPU (user+sys, its rusage)",
            f"{f.cpu:.1f} s: {cores:.2f} cores over the phase, {steady_cores_text}; "
            f"≥ 0.9 cores for {f.sampler.saturated():.0f} s{cpu_note}",
            "",
            "",
        ),
        ("chatrelay CPU per 1,000 tokens", f"{per_k * 1000:.1f} ms ({tokens:,} tokens)", "", ""),
        (
            f"cores needed for {n:,} × {f.args.rate:g} tokens/s (CPU per token × rate)",
            f"{needed:.2f}",
            "< 1 core",
            mark(needed < CPU_TARGET),
        ),
        (
            "fake Discord / model CPU (their processes)",
            f"{f.peers_cpu['discord'] / f.wall:.2f} / {f.peers_cpu['model'] / f.wall:.2f} cores",
            "",
            "",
        ),
        (
            "platform updates accepted (edits)",
            f"{updates:,} ({edits:,}; {updates / n:.1f} per reply)",
            "",
            "",
        ),
        (
            "Redis round trips per update, steady path",
            steady_trips_text,
            "≤ 1",
            mark(steady_ok),
        ),
        (
            "budgets per-process (Redis calls past their bound)",
            f"{degraded_all:.1f} s of the phase",
            "",
            "",
        ),
        (
            "Redis round trips per update, whole phase (without `inflight._FORGET`)",
            f"{all_trips / max(1, updates):.2f} ({all_trips:,}; "
            f"{(all_trips - forgets) / max(1, updates):.2f} without its {forgets:,})",
            "",
            "",
        ),
        (
            "Redis commands per update: steady (client) / whole phase (server, with Lua's)",
            f"{steady_commands_text} / {f.server_commands / max(1, updates):.2f}",
            "",
            "",
        ),
        (
            "peak RSS growth per active reply",
            f"{per_reply / 1024:.1f} KB ({grew / 2**20:.1f} MB over {f.sampler.peak_active})",
            "< 100 KB",
            mark(per_reply < MEMORY_TARGET),
        ),
        (
            "staleness p50 / p99 (max)",
            f"{s(stale50)} / {s(stale99)} ({s(stale_max)})",
            f"p99 ≤ {step + STALE_SLACK:.2f} s",
            mark(stale99 is not None and stale99 <= step + STALE_SLACK),
        ),
        (
            "first visible (deferral) p50 / p99 (max)",
            f"{s(vis50)} / {s(vis99)} ({s(vis_max)}); {r['late_deferrals']} never deferred",
            "< 3 s (Discord's deadline)",
            mark(r["late_deferrals"] == 0 and vis_max is not None and vis_max < 3.0),
        ),
        ("first text p50 / p99", f"{s(text50)} / {s(text99)}", "", ""),
        ("429s from the fake", f"{r['rate_limited']}", "0", mark(r["rate_limited"] == 0)),
        ("exact final text", f"{r['exact'] / n * 100:.1f} %", "100 %", mark(r["exact"] == n)),
    ]
    out = ["| figure | measured | target | |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out.append("")
    out.append(
        f"Staleness target: the interval between two updates of one reply, max(edit interval "
        f"{f.edit_interval:g} s, `discord:interaction:*` budget {f.budget_interval:g} s), + "
        f"{STALE_SLACK:g} s. Load average at the end: {f.load[0]:.2f} (1 min), "
        f"{f.load[1]:.2f} (5 min)."
    )
    out.append("")
    out.append("Redis round trips in the steady window, by first command (per edit):")
    out.append("")
    for label, count in f.steady_trips.most_common(12):
        out.append(f"- {label}: {count:,} ({count / max(1, steady_edits):.3f})")
    out.append("")
    out.append("Whole phase, by first command:")
    out.append("")
    for label, count in f.trips.most_common(15):
        out.append(f"- {label}: {count:,}")
    out.append("")
    server = ", ".join(f"{k} {v:,}" for k, v in sorted(f.server_calls.items(), key=lambda x: -x[1]))
    out.append(f"Server side (INFO commandstats delta, Lua's inner calls included): {server}")
    out.append("")
    calls = ", ".join(f"{k}: {v:,}" for k, v in r["by_route"].items())
    out.append(f"Calls at the fake: {calls}")
    if f.warnings:
        out.append("")
        warned = ", ".join(f"{k} ×{v}" for k, v in f.warnings.most_common(8))
        out.append(f"chatrelay's warnings and errors: {warned}")
    for note in f.notes:
        out.append(f"\nNote: {note}")
    return "\n".join(out)


def print_profile(path: str, top: int = 25) -> None:
    for key in ("cumulative", "tottime"):
        print(f"\ncProfile of chatrelay's process, top {top} by {key}:\n", flush=True)
        stats = pstats.Stats(path)
        stats.sort_stats(key).print_stats(top)
    print("Own time (tottime) by package:\n")
    shares = own_time_by_package(path)
    total = sum(shares.values())
    for name, seconds in shares.most_common(15):
        print(f"- {name}: {seconds:.2f} s ({seconds / total * 100:.1f} %)")


def own_time_by_package(path: str) -> Counter[str]:
    """The profile's own time summed per installed package, chatrelay module
    directory, asyncio, or built-in function (the idle ``epoll`` shows as one)."""
    shares: Counter[str] = Counter()
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    for (filename, _, function), (_, _, own, *_) in stats.items():
        if "site-packages/" in filename:
            name = filename.split("site-packages/")[1].split("/")[0]
        elif filename.startswith(str(ROOT)):
            name = "/".join(Path(filename).relative_to(ROOT).parts[:2])
        elif "/" not in filename:
            name = f"built-in {function}"
        else:
            parent, module = Path(filename).parent.name, Path(filename).name
            name = f"stdlib {parent if parent in ('asyncio', 'json') else module}"
        shares[name] += own
    return shares


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--replies", type=int, default=2000, help="concurrent /ask replies")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s per reply")
    parser.add_argument("--tokens", type=int, default=300, help="tokens per reply")
    parser.add_argument("--chunk-tokens", type=int, default=5, help="tokens per model write")
    parser.add_argument("--first-token", type=float, default=0.5, help="seconds")
    parser.add_argument("--channels", type=int, default=200, help="channels the asks spread over")
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="spread the asks over this many seconds"
    )
    parser.add_argument("--cutoff", type=float, default=600.0, help="seconds before giving up")
    parser.add_argument(
        "--redis-url",
        help="use this Redis (e.g. $REDIS_URL) instead of a private redis-server; its INFO "
        "deltas then include other clients' commands",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="bench/results/production.prof",
        help="cProfile the streaming phase into this file (default %(const)s)",
    )
    parser.add_argument(
        "--tracemalloc",
        nargs="?",
        type=float,
        const=10.0,
        help="trace Python allocations; print what is held per active reply this many "
        "seconds after the burst (default %(const)s)",
    )
    parser.add_argument("--log", help="chatrelay's warnings (default: a temporary file)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    args.private_redis = args.redis_url is None
    if args.profile:
        Path(args.profile).parent.mkdir(parents=True, exist_ok=True)

    # A SIGTERM unwinds like an exception, so the private redis-server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="chatrelay-production-") as name:
        tmp = Path(name)
        log = Path(args.log) if args.log else tmp / "chatrelay.log"
        logging.basicConfig(filename=log, level=logging.WARNING)
        # Every connection the burst opens is a file descriptor: 2,000 model streams,
        # up to 500 Redis connections, discord.py's HTTP connections.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
        print(
            f"{datetime.date.today()}, commit {commit()}, load average before "
            f"{os.getloadavg()[0]:.2f}: {args.replies} replies\n",
            flush=True,
        )
        with contextlib.ExitStack() as stack:
            url = args.redis_url or stack.enter_context(private_redis(tmp / "redis.log"))
            figures = asyncio.run(run(args, url, tmp))
        print(table(figures), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(
                json.dumps(
                    {
                        "date": str(datetime.date.today()),
                        "args": vars(args),
                        "wall": figures.wall,
                        "cpu": figures.cpu,
                        "peers_cpu": figures.peers_cpu,
                        "report": figures.report,
                        "trips": dict(figures.trips),
                        "steady_trips": dict(figures.steady_trips),
                        "degraded_seconds": figures.degraded.seconds(*figures.phase),
                        "server_calls": figures.server_calls,
                        "peak_rss": figures.sampler.peak_rss,
                        "rss_base": figures.rss_base,
                        "warnings": dict(figures.warnings),
                    },
                    indent=1,
                )
            )
    if args.profile:
        print_profile(args.profile)
    if figures.memory is not None:
        print_memory(figures.memory)


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("BENCH_COMMIT", "unknown")


if __name__ == "__main__":
    main()
