"""The two processes ``bench.production`` runs beside chatrelay: the fake Discord
and the model, each in an OS process of its own so that its CPU is not chatrelay's.

``python -m bench.production_peers discord '<json>'`` or ``... model '<json>'``
starts the server, prints one JSON line (its addresses), then answers JSON
commands, one per stdin line, with one JSON line each, until stdin closes.

- **discord**: ``FakeDiscord`` of the tests with Discord's limits, not scaled
  (5 edits per 2 s per interaction token, 50 requests/s per bot with
  interaction routes exempt, the 3 s callback deadline, 15 min tokens), one
  guild of ``channels`` text channels. Commands: ``ready`` (the bot is
  connected and ``/ask`` is synced), ``ask`` (``n`` interactions, reply *i* in
  channel *i* mod ``channels``, each from its own user, all at once or spread
  over ``ramp`` seconds), ``wait`` (until every reply has ended: no loading
  flag, no Stop button, no "writing…"), ``report`` (the figures, below),
  ``rusage``.
- **model**: ``bench.load.TimedModel`` (OpenAI Chat Completions SSE, the fake
  LLM server's bytes, ``chunk_tokens`` tokens per write), which notes when
  each write went out. Commands: ``dump`` (those times, to a file), ``rusage``.

The figures are computed here, in the fake's process, from its records and the
model's dump, so chatrelay's process never holds them: *first visible* is the
interaction's creation to its deferral reaching the fake; *first text* to the
first revision showing model text; *staleness*, for each model write, from the
write to the first revision at which the reply shows all text up to it (as
``bench.load`` measures it). Both processes stamp with ``time.monotonic()``,
which on Linux is one clock for every process of the machine.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.load import (
    Model,
    Sent,
    TimedModel,
    discord_finished,
    discord_model_text,
    shown_timeline,
    staleness,
)
from core.reply.observe import percentile
from tests.fakes.discord_server import (
    GUILD_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeUser,
    InteractionRecord,
    MessageRecord,
)

Json = dict[str, Any]
Handler = Callable[[Json], Awaitable[Json]]

FIRST_CHANNEL = 1_300_000_000_000_000_000
FIRST_USER = 1_310_000_000_000_000_000
UPDATE_ROUTES = (
    "interactions/{interaction_id}/{interaction_token}/callback",
    "webhooks/{webhook_id}/{webhook_token}",
    "webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
)
"""Where an ``/ask`` reply's message is created or changed: the deferral, a followup,
an edit (of ``@original`` or a followup)."""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(hello: Json, handlers: dict[str, Handler]) -> None:
    """Print ``hello``, then answer one command per stdin line until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps(hello), flush=True)
    while line := await reader.readline():
        request = json.loads(line)
        handlers["rusage"] = _rusage
        try:
            answer = await handlers[request["cmd"]](request)
        except Exception as exc:  # the benchmark prints it and stops
            answer = {"error": repr(exc)}
        print(json.dumps(answer), flush=True)


def write_json(path: str, data: Any) -> None:
    Path(path).write_text(json.dumps(data))


def read_json(path: str) -> Any:
    return json.loads(Path(path).read_text())


async def _rusage(_: Json) -> Json:
    return {"cpu": cpu_seconds()}


# --------------------------------------------------------------------------- model


async def run_model(config: Json) -> None:
    model = Model(config["tokens"], config["rate"], config["first_token"], config["chunk_tokens"])
    async with TimedModel(model, scale=1.0) as server:

        async def dump(request: Json) -> Json:
            sent = {i: [s.started, s.ends, s.times] for i, s in server.sent.items()}
            write_json(request["path"], sent)
            return {"streams": len(sent), "writes": sum(len(s.times) for s in server.sent.values())}

        await serve({"base_url": server.base_url}, {"dump": dump})


# --------------------------------------------------------------------------- Discord


class DiscordPeer:
    def __init__(self, fake: FakeDiscord, channels: list[int]) -> None:
        self.fake = fake
        self.channels = channels
        self.asks: list[InteractionRecord] = []

    async def ready(self, request: Json) -> Json:
        fake = self.fake
        await fake.wait_ready(timeout=request.get("timeout", 60))
        await fake.wait_until(
            lambda: any(c["name"] == "ask" for c in fake.guild_commands.get(GUILD_ID, [])),
            timeout=request.get("timeout", 60),
        )
        return {"ok": True}

    async def ask(self, request: Json) -> Json:
        n, ramp = int(request["n"]), float(request.get("ramp", 0.0))
        began = time.monotonic()

        async def one(i: int) -> InteractionRecord:
            if ramp:
                await asyncio.sleep(max(0.0, began + ramp * i / n - time.monotonic()))
            user = FakeUser(FIRST_USER + i, f"user{i}")
            channel = self.channels[i % len(self.channels)]
            return await self.fake.inject_slash_command(
                "ask", {"prompt": f"load question {i}"}, user=user, channel_id=channel
            )

        self.asks = list(await asyncio.gather(*(one(i) for i in range(n))))
        first = min(a.created_at for a in self.asks)
        last = max(a.created_at for a in self.asks)
        return {"first_event": first, "last_event": last, "asked": len(self.asks)}

    def messages(self, ask: InteractionRecord) -> list[MessageRecord]:
        return ([ask.original] if ask.original else []) + list(ask.followups)

    def ended(self, ask: InteractionRecord) -> bool:
        messages = self.messages(ask)
        return bool(messages) and all(discord_finished(m) for m in messages)

    def over(self, ask: InteractionRecord) -> bool:
        """Ended, or never deferred in time (it never gets a message)."""
        late = time.monotonic() - ask.created_at > self.fake.callback_deadline
        return self.ended(ask) or (not ask.acknowledged and late)

    async def wait(self, request: Json) -> Json:
        """Until every reply is over, ``within`` seconds have passed, or the bot has
        made no call for ``idle`` seconds (what is left will not end by itself: an
        orphan's finaliser comes within the in-flight timeout, 30 s, and a sweep)."""
        now = time.monotonic()
        deadline, idle = now + float(request["within"]), float(request["idle"])
        calls, quiet_since = len(self.fake.calls), now
        while now < deadline and now - quiet_since < idle:
            if all(self.over(a) for a in self.asks):
                break
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if len(self.fake.calls) != calls:
                calls, quiet_since = len(self.fake.calls), now
        return {"ended": sum(self.over(a) for a in self.asks), "at": time.monotonic()}

    async def report(self, request: Json) -> Json:
        model = Model(
            request["tokens"], request["rate"], request["first_token"], request["chunk_tokens"]
        )
        dumped = read_json(request["model_dump"])
        sent = {int(k): Sent(v[0], v[1], v[2]) for k, v in dumped.items()}
        first_event = min(a.created_at for a in self.asks)
        visible: list[float] = []
        first_text: list[float] = []
        stale: list[float] = []
        first_text_at: list[float] = []
        exact = late_deferrals = 0
        for i, ask in enumerate(self.asks):
            expected = "".join(model.text(i))
            if ask.responded_at is not None:
                visible.append(ask.responded_at - ask.created_at)
            else:
                late_deferrals += 1
            revisions = [
                (r.time, k, discord_model_text(r.content))
                for k, m in enumerate(self.messages(ask))
                for r in m.history
            ]
            texts = [when for when, _, text in revisions if text]
            if texts:
                first_text.append(min(texts) - ask.created_at)
                first_text_at.append(min(texts))
            timeline, final = shown_timeline(revisions, expected)
            if i in sent:
                stale += staleness(sent[i], timeline, 1.0)
            exact += self.ended(ask) and final == expected
        calls = [c for c in self.fake.calls if c.time >= first_event]
        by_route = Counter(f"{c.method} {c.route} {c.status}" for c in calls)
        updates = [c for c in calls if c.route in UPDATE_ROUTES and c.status < 300]
        # The steady path: 90 % of the replies show text and 90 % still stream (the
        # model has not written their last token). Empty when a saturated process
        # shows first texts later than the first streams end.
        ends = [s.times[-1] for s in sent.values() if s.times]
        steady = (
            percentile(first_text_at, 0.9) if first_text_at else 0.0,
            percentile(ends, 0.1) if ends else 0.0,
        )
        steady_edits = sum(
            1 for c in updates if c.method == "PATCH" and steady[0] <= c.time < steady[1]
        )

        def pct(values: list[float], q: float) -> float | None:
            return percentile(values, q) if values else None

        return {
            "replies": len(self.asks),
            "first_event": first_event,
            "first_visible": [pct(visible, 0.5), pct(visible, 0.99), max(visible, default=None)],
            "late_deferrals": late_deferrals,
            "first_text": [pct(first_text, 0.5), pct(first_text, 0.99)],
            "staleness": [pct(stale, 0.5), pct(stale, 0.99), max(stale, default=None)],
            "stale_samples": len(stale),
            "exact": exact,
            "calls": len(calls),
            "updates": len(updates),
            "edits": sum(1 for c in updates if c.method == "PATCH"),
            "rate_limited": sum(1 for c in calls if c.status == 429 and c.injected is None),
            "by_route": dict(by_route.most_common()),
            "steady": [steady[0], steady[1], steady_edits],
            "model_tokens": sum(len(model.text(i)) for i in sent),
            "model_writes": sum(len(s.times) for s in sent.values()),
        }


async def run_discord(config: Json) -> None:
    channels = [FIRST_CHANNEL + i for i in range(int(config["channels"]))]
    guild = FakeGuild(
        id=GUILD_ID,
        channels=[FakeChannel(id=c, name=f"c{k}", position=k) for k, c in enumerate(channels)],
    )
    async with FakeDiscord(guilds=[guild]) as fake:
        peer = DiscordPeer(fake, channels)
        hello = {
            "api_url": fake.api_url,
            "gateway_url": fake.gateway_url,
            "token": fake.bot_token,
            "guild_id": GUILD_ID,
        }
        await serve(
            hello,
            {"ready": peer.ready, "ask": peer.ask, "wait": peer.wait, "report": peer.report},
        )


def main() -> None:
    kind, config = sys.argv[1], json.loads(sys.argv[2])
    asyncio.run(run_discord(config) if kind == "discord" else run_model(config))


if __name__ == "__main__":
    main()
