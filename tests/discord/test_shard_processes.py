"""Discord's shards split across OS processes, as the StatefulSet deploys them.

Two real ``chatrelay run`` processes (pods ``chatrelay-discord-0`` and ``-1``)
share one Redis and serve one bot against the fake Discord (its gateway routes
a guild's events to the session of the guild's shard, DMs to shard 0) and the
fake model, both in this test's process. Each pod is started the way
Kubernetes starts it: ``/bin/sh -c`` with the StatefulSet's own shell script
(``deploy/k8s/discord.yaml``), the pod's name as ``POD_NAME`` and the pod's
environment from the manifest (its cluster addresses pointed at the fakes and
the test's Redis prefix, its timings shortened); the script derives
``DISCORD_SHARD_IDS`` from the ordinal and ``exec``s ``chatrelay run --platform
discord``, here a shim running this checkout's ``python -m bots.cli``.

The pods are told apart by the shard each IDENTIFYs with (which gateway session
received an event), by their own logs (JSON, one file each) and by a header
each sends the model (``LLM_EXTRA_HEADERS``). Every wait is bounded and waits
for an event, never for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bots.discord.handover import shard_of
from core.state.inflight import InflightRecord
from core.state.keys import Keys
from core.state.lastseen import LastSeen
from tests.discord.conftest import (
    BUDGET_LIMITS,
    FAKE_LIMITS,
    answer,
    bot_messages,
    eventually,
    finished,
    state_line,
    stop_id,
    stream,
)
from tests.fakes.discord_server import (
    ALICE,
    CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    MessageRecord,
    default_guilds,
)
from tests.fakes.llm_server import FakeLLMServer, FakeResponse
from tests.fakes.llm_server.records import RecordedRequest
from tests.fakes.streams import chat_stream, split_events
from tests.invariants import Expected, check_discord
from tests.test_deploy import _shard_script, literal_env, pod_spec

REPO = Path(__file__).resolve().parents[2]
COUNT = 2
"""Shards, as the StatefulSet's DISCORD_SHARD_COUNT says (checked below)."""
POD_HEADER = "x-chatrelay-pod"
"""Each pod names itself to the model in this header (``LLM_EXTRA_HEADERS``)."""

GUILD_1 = GUILD_ID
"""The fake's default guild (``CHANNEL_ID``): on shard 1 of 2."""
GUILD_0 = GUILD_ID + (1 << 22)
"""A second guild, one step of the shard hash further: on shard 0 of 2."""
CHANNEL_0 = 1_200_000_000_000_000_300
CHANNEL_0B = 1_200_000_000_000_000_301
"""The text channels of ``GUILD_0``."""

GLOBAL_LIMIT = 8
"""Requests per second the fake allows the bot token (Discord: 50), from when both
pods are ready; each pod's budget alone lets 5 per second through (with a burst
of 2), so two pods keep under it only by sharing the budget."""
BUDGETS = {**BUDGET_LIMITS, "discord:global": "5/1/2"}
"""``RATE_LIMITS``: the Discord suite's scaled-down budgets, the token's included."""

LONG = ["word "] * 400
"""A reply streaming for about 20 s (a Stop ends it long before)."""
HALF = "Half of an answer"
_HALF_EVENTS = split_events(
    chat_stream(["Half", " of", " an", " answer"], finish=None, usage=None, done=False)
)
HALF_THEN_SILENCE = FakeResponse(chunks=_HALF_EVENTS, stall_after=len(_HALF_EVENTS))
"""The model writes ``HALF``, then nothing more until the client goes: the reply
stays mid-way, with nothing in flight, for as long as the test needs."""

STARTUP = 30.0
"""Seconds a pod gets to be ready (imports, Redis, login, IDENTIFY, guilds)."""
EXIT = 15.0
"""Seconds a pod gets to exit after SIGTERM (a 0.5 s drain, then closing)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command_of(pid: int) -> list[str] | None:
    """A process's argv (None where there is no /proc to read it from)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return None
    return cmdline.read_bytes().decode().rstrip("\0").split("\0")


# ------------------------------------------------------------------ the pods


@dataclass
class Pod:
    """One ``chatrelay-discord-N`` pod: the shell script, exec'd into chatrelay."""

    name: str
    ordinal: int
    process: asyncio.subprocess.Process
    log: Path
    port: int

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()

    def records(self) -> list[dict[str, Any]]:
        """The pod's JSON log lines (the shell script's own line is plain text)."""
        found = []
        for line in self.lines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def replies(self, outcome: str | None = None) -> list[dict[str, Any]]:
        """The last line of each reply this pod wrote (``core.service.responder``)."""
        return [
            r
            for r in self.records()
            if r.get("logger") == "core.service.responder"
            and "outcome" in r
            and str(r.get("message", "")).startswith("reply ")
            and (outcome is None or r["outcome"] == outcome)
        ]

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.lines()[-lines:])


class Cluster:
    """The StatefulSet's pods, started by its shell script, each against the fakes."""

    def __init__(
        self,
        fake: FakeDiscord,
        llm_server: FakeLLMServer,
        redis_url: str,
        keys: Keys,
        tmp_path: Path,
    ) -> None:
        self.fake, self.llm_server = fake, llm_server
        self.redis_url, self.keys, self.tmp_path = redis_url, keys, tmp_path
        self.script, statefulset = _shard_script()
        self.statefulset = statefulset["metadata"]["name"]
        self.manifest_env = literal_env(pod_spec(statefulset)["containers"][0])
        assert int(self.manifest_env["DISCORD_SHARD_COUNT"]) == COUNT
        assert statefulset["spec"]["replicas"] == COUNT  # one shard per pod
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        shim = self.bin / "chatrelay"  # the image's console script, from this checkout
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m bots.cli "$@"\n')
        shim.chmod(0o755)
        (tmp_path / "channels.toml").write_text("")
        self.pods: list[Pod] = []
        self._starts = 0

    def env(self, pod: str) -> dict[str, str]:
        """The pod's environment: the manifest's (ConfigMap included), the cluster's
        addresses and secrets replaced by the fakes', timings shortened."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LLM_", "SLACK_", "DISCORD_", "REDIS_", "INFLIGHT_", "OTEL_"))
        }
        env = {**base, **self.manifest_env}
        env.update(
            POD_NAME=pod,  # the downward API's metadata.name
            PATH=f"{self.bin}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}",
            PYTHONPATH=str(REPO),
            DISCORD_BOT_TOKEN=self.fake.bot_token,
            DISCORD_API_URL=self.fake.api_url,
            DISCORD_GATEWAY_URL=self.fake.gateway_url,
            DISCORD_EDIT_INTERVAL="0.2",
            LLM_BASE_URL=self.llm_server.base_url,
            LLM_MODEL="test-model",
            LLM_API_KEY="sk-test",
            LLM_MAX_RETRIES="0",
            LLM_EXTRA_HEADERS=json.dumps({POD_HEADER: pod}),
            REDIS_URL=self.redis_url,
            REDIS_PREFIX=self.keys.prefix,
            RATE_LIMITS=json.dumps(BUDGETS),
            INFLIGHT_HEARTBEAT="0.5",
            INFLIGHT_TIMEOUT="2",
            CHANNELS_FILE=str(self.tmp_path / "channels.toml"),
            PORT=str(free_port()),
            METRICS_PORT=str(free_port()),
            SHUTDOWN_GRACE_S="0.5",
        )
        assert env["LOG_FORMAT"] == "json"  # the manifest's, which the assertions read
        return env

    async def start(self, ordinal: int) -> Pod:
        """Start pod ``ordinal`` as Kubernetes does; returns once it is ready."""
        name = f"{self.statefulset}-{ordinal}"
        env = self.env(name)
        self._starts += 1
        log = self.tmp_path / f"{name}.{self._starts}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                self.script,
                env=env,
                cwd=self.tmp_path,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        pod = Pod(name, ordinal, process, log, int(env["PORT"]))
        self.pods.append(pod)
        await self._ready(pod)
        # The script exec'd (its pid is chatrelay's, which a SIGKILL reaches) the
        # manifest's command: ``chatrelay run --platform discord``.
        argv = command_of(process.pid)
        assert argv is None or argv[-3:] == ["run", "--platform", "discord"], argv
        return pod

    async def _ready(self, pod: Pod) -> None:
        """Its shard IDENTIFYed at the fake and its ``/readyz`` answers 200 (Redis,
        and every shard of the process connected and ready); fails at once if the
        pod exits, with its log."""
        identified = len(self.identifies(pod.ordinal))
        exited = asyncio.create_task(pod.process.wait())
        ready = asyncio.create_task(self._identified_and_ready(pod, identified))
        try:
            done, _ = await asyncio.wait(
                {exited, ready}, timeout=STARTUP, return_when="FIRST_COMPLETED"
            )
        finally:
            for task in (exited, ready):
                task.cancel()
            await asyncio.gather(exited, ready, return_exceptions=True)
        if ready in done and ready.exception() is None:
            return
        if exited in done:
            raise AssertionError(f"{pod.name} exited with {pod.process.returncode}\n{pod.tail()}")
        raise AssertionError(f"{pod.name} was not ready in {STARTUP}s\n{pod.tail()}")

    async def _identified_and_ready(self, pod: Pod, identified: int) -> None:
        await self.fake.wait_until(
            lambda: len(self.identifies(pod.ordinal)) > identified, timeout=STARTUP
        )
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{pod.port}/readyz") as answer:
                        if answer.status == 200:
                            return
                await asyncio.sleep(0.05)

    def identifies(self, shard: int) -> list[dict[str, Any]]:
        return [i for i in self.fake.identifies if i.get("shard") == [shard, COUNT]]

    async def kill(self, pod: Pod) -> None:
        """SIGKILL: no drain, no finaliser, no last write."""
        pod.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(EXIT):
            await pod.process.wait()

    async def aclose(self) -> None:
        """SIGTERM every pod still running (a drain, as a rolling update does), then
        SIGKILL any that did not exit in time."""
        running = [p for p in self.pods if p.process.returncode is None]
        for pod in running:
            with contextlib.suppress(ProcessLookupError):
                pod.process.send_signal(signal.SIGTERM)
        for pod in running:
            try:
                async with asyncio.timeout(EXIT):
                    await pod.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    pod.process.kill()
                await pod.process.wait()

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.pods)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    guild_0 = FakeGuild(
        id=GUILD_0,
        name="shard zero",
        channels=[
            FakeChannel(id=CHANNEL_0, name="zero"),
            FakeChannel(id=CHANNEL_0B, name="zero-b", position=1),
        ],
        members=[ALICE],
        owner_id=ALICE.id,
    )
    limits = dataclasses.replace(FAKE_LIMITS)  # a copy: the test tightens it
    async with FakeDiscord(limits=limits, guilds=[*default_guilds(), guild_0]) as server:
        yield server


@pytest.fixture
async def cluster(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    redis_url: str,
    keys: Keys,
    redis: Redis,  # deletes the test's keys once the pods are gone
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    pods = Cluster(fake, llm_server, redis_url, keys, tmp_path)
    try:
        yield pods
    finally:
        await pods.aclose()


async def start_both(cluster: Cluster) -> tuple[Pod, Pod]:
    """Both pods, started together (``OrderedReady`` starts them one after the other;
    nothing here depends on the order)."""
    zero, one = await asyncio.gather(cluster.start(0), cluster.start(1))
    return zero, one


# ------------------------------------------------------------------ helpers


def by_prompt(answers: dict[str, FakeResponse]) -> Callable[[RecordedRequest], FakeResponse]:
    """The model's answer chosen by the user's last message, whichever pod asks first."""

    def pick(request: RecordedRequest) -> FakeResponse:
        return answers[request.json["messages"][-1]["content"]]

    return pick


def requests_about(llm_server: FakeLLMServer, prompt: str) -> list[RecordedRequest]:
    """The model requests whose last message is ``prompt``."""
    return [
        r
        for r in llm_server.requests
        if isinstance(r.json, dict) and r.json["messages"][-1]["content"] == prompt
    ]


def asked_by(llm_server: FakeLLMServer, prompt: str) -> list[str]:
    """The pods that asked the model about ``prompt`` (one name per request)."""
    return [r.headers.get(POD_HEADER, "?") for r in requests_about(llm_server, prompt)]


def received_by(fake: FakeDiscord, event: str, object_id: int) -> list[int]:
    """The shards whose gateway sessions got ``event`` about ``object_id``."""
    return sorted(
        session.shard[0]
        for session in fake.sessions.values()
        for payload in session.events
        if payload["t"] == event and payload["d"].get("id") == str(object_id)
    )


def reply_to(fake: FakeDiscord, question: MessageRecord) -> list[MessageRecord]:
    return [
        m
        for m in bot_messages(fake, question.channel_id)
        if (m.message_reference or {}).get("message_id") == str(question.id)
    ]


def in_guild(lines: Iterable[dict[str, Any]], guild: int) -> list[dict[str, Any]]:
    return [r for r in lines if r.get("workspace") == str(guild)]


def reply_id_of(message: MessageRecord) -> str:
    """The reply's id, from its Stop button (``chatrelay:stop:<reply>:<asker>``)."""
    match = re.match(r"^chatrelay:stop:([0-9a-f]+):\d+$", stop_id(message))
    assert match is not None
    return match.group(1)


async def recorded_text(redis: Redis, keys: Keys, reply_id: str, text: str) -> bool:
    """Whether the reply's in-flight record (what a finaliser shows) has ``text``."""
    raw = await redis.hget(keys.inflight_records("discord"), reply_id)
    return raw is not None and InflightRecord.from_json(raw).text == text


async def cursor_at(redis: Redis, keys: Keys, channel: int, message_id: int) -> bool:
    """Whether the channel's cursor (``bots.discord.events.Cursors``) reached the message."""
    seen = await LastSeen(redis, keys).recent("discord", str(shard_of(GUILD_1, COUNT)), 10)
    return any(s.channel == str(channel) and int(s.message) >= message_id for s in seen)


# ------------------------------------------------------------------ tests


async def test_each_pod_serves_its_shards_guilds_and_a_stop_works_from_the_other(
    fake: FakeDiscord, llm_server: FakeLLMServer, cluster: Cluster
) -> None:
    """Discord sends a guild's interactions to the guild's shard, so a Stop normally
    reaches the pod writing the reply; here the press is dispatched to shard 0's
    session (``inject_component(shard=0)``), as one can reach a pod that does not run
    the reply (a re-shard's rolling restart, say): only the cancel bus in Redis can
    carry it to pod 1."""
    assert (shard_of(GUILD_0, COUNT), shard_of(GUILD_1, COUNT)) == (0, 1)
    try:
        zero, one = await start_both(cluster)

        # (a) the script gave each pod its own shard, and each IDENTIFYed with it
        assert sorted(i["shard"] for i in fake.identifies) == [[0, COUNT], [1, COUNT]]
        for pod in (zero, one):
            said = f"chatrelay: pod {pod.ordinal} runs Discord shards {pod.ordinal} of {COUNT}"
            assert said in pod.lines(), pod.tail()
        # only the pod of shard 0 publishes the slash commands
        assert len(fake.calls_to("PUT", "applications/{application_id}/commands")) == 1

        # (b) two mentions in each guild (one per channel), all at once: each answered
        # once, by its shard's pod, with the model's exact text; meanwhile both pods
        # stream together under the bot token's limit, which neither could keep alone
        fake.limits.global_per_second = GLOBAL_LIMIT
        questions = {
            (CHANNEL_0, "zero a"): zero,
            (CHANNEL_0B, "zero b"): zero,
            (CHANNEL_ID, "one a"): one,
            (OTHER_CHANNEL_ID, "one b"): one,
        }
        texts = {prompt: f"Answer to {prompt}:" + " word" * 40 for _, prompt in questions}
        pick = by_prompt(
            {
                prompt: stream([f"Answer to {prompt}:"] + [" word"] * 40, delay=0.05)
                for prompt in texts
            }
        )
        llm_server.enqueue(*[pick] * len(questions))
        asked = await asyncio.gather(
            *[
                fake.inject_message(channel, prompt, ALICE, mentions_bot=True)
                for channel, prompt in questions
            ]
        )
        await eventually(
            lambda: all(
                len(reply_to(fake, q)) == 1 and finished(reply_to(fake, q)[0]) for q in asked
            ),
            within=20,
        )
        for question, ((channel, prompt), pod) in zip(asked, questions.items(), strict=True):
            [reply] = reply_to(fake, question)
            assert answer(reply) == texts[prompt]
            assert bot_messages(fake, channel) == [reply]
            assert received_by(fake, "MESSAGE_CREATE", question.id) == [pod.ordinal]
            assert asked_by(llm_server, prompt) == [pod.name]
        await eventually(lambda: len(zero.replies()) == 2 and len(one.replies()) == 2)
        assert [r["outcome"] for r in in_guild(zero.replies(), GUILD_0)] == ["done"] * 2
        assert [r["outcome"] for r in in_guild(one.replies(), GUILD_1)] == ["done"] * 2
        assert fake.natural_429s() == 0

        # (c) a long reply by pod 1; the Stop press reaches pod 0 (shard 0's session)
        llm_server.enqueue(stream(LONG, delay=0.05))
        q2 = await fake.inject_message(CHANNEL_ID, "talk a lot", ALICE, mentions_bot=True)
        await eventually(
            lambda: any(m.components and answer(m) for m in reply_to(fake, q2)), within=10
        )
        [long_reply] = reply_to(fake, q2)
        assert asked_by(llm_server, "talk a lot") == [one.name]
        [long_request] = requests_about(llm_server, "talk a lot")
        assert long_request.ended_at is None  # still streaming
        pressed = await fake.inject_component(
            stop_id(long_reply), long_reply.id, ALICE, CHANNEL_ID, shard=0
        )
        assert received_by(fake, "INTERACTION_CREATE", pressed.id) == [0]
        await eventually(lambda: pressed.acknowledged, within=3)
        ended = await llm_server.wait_ended(long_request, timeout=5)
        await eventually(lambda: finished(long_reply), within=5)
        # Acknowledged by pod 0 within Discord's 3 seconds, without an edit of its own;
        # pod 1, which writes the reply, stopped it: the model's stream was abandoned
        # and the message shows the text it had, then who stopped it.
        assert pressed.callback_type == 6
        assert pressed.responded_at is not None and pressed.responded_at - pressed.created_at < 3
        assert ended == "client_disconnected"
        assert state_line(long_reply) == "-# ⏹️ Stopped by Alice"
        text = answer(long_reply)
        assert text and "".join(LONG).startswith(text) and len(text) < len("".join(LONG))
        await eventually(lambda: one.replies("stopped"))
        assert [r["outcome"] for r in in_guild(one.replies(), GUILD_1)] == [
            "done",
            "done",
            "stopped",
        ]
        assert not zero.replies("stopped")

        # (d) nothing was rate limited, and every reply keeps the delivery promise
        assert fake.natural_429s() == 0
        assert (
            check_discord(
                fake,
                {
                    **{
                        q.id: Expected(texts[p]) for q, (_, p) in zip(asked, questions, strict=True)
                    },
                    q2.id: Expected("".join(LONG), may_end_early=True),
                },
            )
            == []
        )
    except BaseException:
        print(cluster.tails())
        raise


async def test_a_killed_pods_reply_is_finished_by_the_other_and_its_restart_takes_the_shard_back(
    fake: FakeDiscord,
    llm_server: FakeLLMServer,
    cluster: Cluster,
    redis: Redis,
    keys: Keys,
) -> None:
    """In-flight records are one registry per platform (any pod's sweeper claims any
    orphan): pod 0 finishes the reply pod 1 was writing when it was SIGKILLed. The
    restarted pod 1 IDENTIFYs shard 1 again and catches up on the mention sent while
    it was down (its old session's events are not replayed to a new IDENTIFY)."""
    try:
        zero, one = await start_both(cluster)
        llm_server.enqueue(HALF_THEN_SILENCE)
        question = await fake.inject_message(CHANNEL_ID, "talk a lot", ALICE, mentions_bot=True)
        # The reply shows the model's first words and waits for more (the model
        # stalls); its in-flight record names that text, and the channel's cursor is
        # in Redis (the restarted pod catches up from it).
        await eventually(
            lambda: any(answer(m) == HALF and m.components for m in reply_to(fake, question)),
            within=10,
        )
        [reply] = reply_to(fake, question)
        reply_id = reply_id_of(reply)
        assert "writing…" in reply.content
        await eventually(lambda: recorded_text(redis, keys, reply_id, HALF), within=5)
        await eventually(lambda: cursor_at(redis, keys, CHANNEL_ID, question.id), within=5)
        assert asked_by(llm_server, "talk a lot") == [one.name]
        [request] = requests_about(llm_server, "talk a lot")
        await cluster.kill(one)
        assert await llm_server.wait_ended(request, timeout=5) == "client_disconnected"

        # (e) pod 0, on the other shard, finishes pod 1's half-written reply
        await eventually(lambda: finished(reply), within=10)
        assert answer(reply) == HALF
        assert state_line(reply).startswith("-# ⚠️ The reply was interrupted")
        assert reply.components == []
        finalised = [
            r
            for r in zero.records()
            if str(r.get("message", "")).startswith(f"finalised reply {reply_id} ")
        ]
        assert len(finalised) == 1, zero.tail()

        # A mention on shard 1 while its pod is down: no process gets it live
        missed = await fake.inject_message(CHANNEL_ID, "anyone there?", ALICE, mentions_bot=True)
        assert received_by(fake, "MESSAGE_CREATE", missed.id) == [1]  # the dead session's
        llm_server.enqueue(stream(["Back", " again."]), stream(["Still", " here."]))
        restarted = await cluster.start(1)
        assert len(cluster.identifies(1)) == 2 and len(cluster.identifies(0)) == 1
        await eventually(
            lambda: len(reply_to(fake, missed)) == 1 and finished(reply_to(fake, missed)[0]),
            within=15,
        )
        assert answer(reply_to(fake, missed)[0]) == "Back again."
        assert asked_by(llm_server, "anyone there?") == [restarted.name]
        # and it serves shard 1 live again; pod 0 still serves its own
        live = await fake.inject_message(CHANNEL_ID, "and now?", ALICE, mentions_bot=True)
        await eventually(
            lambda: len(reply_to(fake, live)) == 1 and finished(reply_to(fake, live)[0]),
            within=15,
        )
        assert answer(reply_to(fake, live)[0]) == "Still here."
        assert asked_by(llm_server, "and now?") == [restarted.name]
        # (shard 1's sessions: the live one, and the dead pod's, which Discord keeps
        # for a RESUME that never comes)
        assert set(received_by(fake, "MESSAGE_CREATE", live.id)) == {1}

        assert fake.natural_429s() == 0
        assert (
            check_discord(
                fake,
                {
                    question.id: Expected(HALF + " and the rest", may_end_early=True),
                    missed.id: Expected("Back again."),
                    live.id: Expected("Still here."),
                },
            )
            == []
        )
        assert not zero.replies() and restarted.process.returncode is None
    except BaseException:
        print(cluster.tails())
        raise
