"""The fake Discord behaves like Discord where the real discord.py can tell.

chatrelay's Discord tests will trust this fake for size limits, the shared per-channel
send/edit limit, 429 handling, interaction deadlines and token lifetimes. If the fake
were lenient (no 429s, no 400s, no expiry) those tests would pass for the wrong reason,
so every behaviour here is checked through the real ``discord.Client`` (or raw HTTP
where discord.py would hide the detail, such as headers it consumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import discord
import discord.http
import discord.utils
import pytest
from discord import app_commands

from tests.fakes.discord_server import (
    ALICE,
    APP_ID,
    BOB,
    BOT_USER_ID,
    CHANNEL_ID,
    EDIT_INTERACTION_MESSAGE,
    EDIT_MESSAGE,
    FLAG_LOADING,
    GUILD_ID,
    SEND_MESSAGE,
    FakeDiscord,
    Limit,
    point_discord_py_at,
)

pytestmark = pytest.mark.timeout(10)

MINIMAL = discord.Intents(guilds=True, guild_messages=True)
"""No privileged intent: what chatrelay asks for by default."""


# --------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[FakeDiscord]:
    """A started fake with discord.py pointed at it for the block."""
    async with FakeDiscord(**options) as fake:
        with point_discord_py_at(fake):
            yield fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with serve() as server:
        yield server


@contextlib.asynccontextmanager
async def connected(
    fake: FakeDiscord,
    client: discord.Client | None = None,
    *,
    after_ready: Callable[[discord.Client], Awaitable[None]] | None = None,
) -> AsyncIterator[discord.Client]:
    """Logs ``client`` in through the fake, connects the gateway, waits for on_ready;
    closes it afterwards. Fails fast if the connection dies instead of hanging."""
    client = client or discord.Client(intents=MINIMAL, guild_ready_timeout=0.05)
    await client.login(fake.bot_token)
    runner = asyncio.create_task(client.connect(reconnect=False))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({runner, ready}, timeout=5, return_when="FIRST_COMPLETED")
        if runner in done:
            runner.result()
            raise AssertionError("gateway connection ended before READY")
        assert ready in done, "no on_ready within 5 s"
        if after_ready is not None:
            await after_ready(client)
        yield client
    finally:
        ready.cancel()
        await client.close()
        with contextlib.suppress(discord.ConnectionClosed):
            await asyncio.wait_for(runner, 5)


def text_channel(client: discord.Client, channel_id: int = CHANNEL_ID) -> discord.TextChannel:
    channel = client.get_channel(channel_id)
    assert isinstance(channel, discord.TextChannel), f"channel {channel_id} not in cache"
    return channel


# --------------------------------------------------------------------------- login, gateway


async def test_login_and_gateway_handshake(fake: FakeDiscord) -> None:
    """login() makes exactly Discord's two calls and the gateway's READY + GUILD_CREATE
    fill discord.py's cache, so a bot sees its guild, channels and own permissions."""
    async with connected(fake) as client:
        assert [(c.method, c.path) for c in fake.calls[:2]] == [
            ("GET", "users/@me"),
            ("GET", "oauth2/applications/@me"),
        ]
        assert client.user is not None and client.user.id == BOT_USER_ID
        assert client.application_id == APP_ID
        guild = client.get_guild(GUILD_ID)
        assert guild is not None and not guild.unavailable
        channel = text_channel(client)
        assert channel.name == "general"
        assert guild.me is not None
        assert channel.permissions_for(guild.me).send_messages

        assert fake.identifies[0]["intents"] == MINIMAL.value
        assert fake.identifies[0]["token"] == fake.bot_token
        compression = discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
        assert fake.gateway_queries[0] == {"v": "10", "encoding": "json", "compress": compression}
        (conn,) = fake.connections
        assert conn.compress == ("zlib-stream" if compression == "zlib-stream" else None)
        assert conn.heartbeats >= 1  # discord.py beats right after HELLO; the fake ACKs
        await fake.wait_ready(1)


async def test_wrong_token_is_refused_over_rest(fake: FakeDiscord) -> None:
    """A bad token gets Discord's 401 (discord.py turns it into LoginFailure), and JSON
    answers carry ``Content-Type: application/json`` exactly — discord.py compares the
    header string, so ``; charset=utf-8`` would make it see text instead of JSON."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.api_url}/users/@me") as resp:
            assert resp.status == 401
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["message"] == "401: Unauthorized"
        headers = {"Authorization": f"Bot {fake.bot_token}"}
        async with http.get(f"{fake.api_url}/users/@me", headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["id"] == str(BOT_USER_ID)

    client = discord.Client(intents=MINIMAL)
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("not-the-token")
    finally:
        await client.close()


# --------------------------------------------------------------------------- messages in


async def test_injected_messages_reach_on_message_with_discords_content_rules(
    fake: FakeDiscord,
) -> None:
    """on_message fires for injected MESSAGE_CREATEs; without the MESSAGE_CONTENT intent
    the text is blank unless the bot is mentioned or it is a DM, as on Discord — the
    reason chatrelay replies to mentions by default."""
    seen: asyncio.Queue[discord.Message] = asyncio.Queue()
    client = discord.Client(
        intents=discord.Intents(guilds=True, guild_messages=True, dm_messages=True),
        guild_ready_timeout=0.05,
    )

    @client.event
    async def on_message(message: discord.Message) -> None:
        await seen.put(message)

    async with connected(fake, client):
        await fake.inject_message(CHANNEL_ID, "not for you", ALICE)
        plain = await asyncio.wait_for(seen.get(), 2)
        assert plain.author.id == ALICE.id
        assert plain.channel.id == CHANNEL_ID
        assert isinstance(plain.channel, discord.TextChannel)
        assert plain.content == ""

        rec = await fake.inject_message(CHANNEL_ID, "hello bot", ALICE, mentions_bot=True)
        mention = await asyncio.wait_for(seen.get(), 2)
        assert mention.id == rec.id
        assert mention.content == f"<@{BOT_USER_ID}> hello bot"
        assert client.user in mention.mentions

        dm = fake.add_dm_channel(BOB)
        await fake.inject_message(dm.id, "private question", BOB)
        private = await asyncio.wait_for(seen.get(), 2)
        assert private.guild is None
        assert private.content == "private question"


# --------------------------------------------------------------------------- messages out


async def test_send_edit_delete_record_allowed_mentions(fake: FakeDiscord) -> None:
    """Sends and edits are stored with their history, and ``allowed_mentions`` is
    recorded per call and applied as Discord does: an edit that omits it re-parses
    every mention (the ping chatrelay must avoid)."""
    async with connected(fake) as client:
        channel = text_channel(client)
        msg = await channel.send(
            f"hi {ALICE.mention}", allowed_mentions=discord.AllowedMentions.none()
        )
        rec = fake.message(CHANNEL_ID, msg.id)
        assert rec.content == f"hi {ALICE.mention}"
        assert rec.mentions == []
        assert rec.allowed_mentions[0] is not None and rec.allowed_mentions[0]["parse"] == []

        only_alice = discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(ALICE.id)]
        )
        edited = await msg.edit(
            content=f"hi {ALICE.mention} and {BOB.mention}", allowed_mentions=only_alice
        )
        assert edited.edited_at is not None
        assert rec.mentions == [ALICE.id]

        await edited.edit(content=f"bye {BOB.mention}")
        assert rec.allowed_mentions[2] is None
        assert rec.mentions == [BOB.id]  # omitted → Discord parses everything
        assert [r.kind for r in rec.history] == ["create", "edit", "edit"]
        assert rec.history[0].time <= rec.history[1].time <= rec.history[2].time
        assert fake.rendered(CHANNEL_ID, msg.id) == f"bye {BOB.mention}"

        fetched = await channel.fetch_message(msg.id)
        assert fetched.content == f"bye {BOB.mention}"
        await fetched.delete()
        with pytest.raises(discord.NotFound) as info:
            await channel.fetch_message(msg.id)
        assert info.value.code == 10008


async def test_oversized_messages_are_rejected_like_discord(fake: FakeDiscord) -> None:
    """Discord answers 400/50035 to content over 2000 chars and to embeds over their
    limits; length caps break streams more often than rate limits, so the fake must
    refuse exactly what Discord refuses — and accept exactly 2000."""
    fake.limits.channel_messages = Limit(20, 1.0)  # refused calls count too; keep it fast
    async with connected(fake) as client:
        channel = text_channel(client)
        await channel.send("x" * 2000)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("x" * 2001)
        assert (info.value.status, info.value.code) == (400, 50035)
        assert "2000 or fewer" in str(info.value)

        too_long = discord.Embed(description="d" * 4097)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send(embed=too_long)
        assert "4096 or fewer" in str(info.value)

        halves = [discord.Embed(description="d" * 3001) for _ in range(2)]
        with pytest.raises(discord.HTTPException) as info:
            await channel.send(embeds=halves)
        assert "6000" in str(info.value)

        # discord.py refuses 11 embeds itself; the fake must too, for other clients.
        route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=CHANNEL_ID)
        eleven = [{"description": "e"} for _ in range(11)]
        with pytest.raises(discord.HTTPException) as info:
            await client.http.request(route, json={"embeds": eleven})
        assert "10 or fewer" in str(info.value)

        ok = await channel.send("short")
        with pytest.raises(discord.HTTPException) as info:
            await ok.edit(content="y" * 2001)
        assert info.value.code == 50035
        assert fake.message(CHANNEL_ID, ok.id).content == "short"
        assert len(fake.channel_messages(CHANNEL_ID)) == 2


# --------------------------------------------------------------------------- rate limits


async def test_rate_limit_headers_and_429_shape_over_raw_http(fake: FakeDiscord) -> None:
    """Every answer carries the X-RateLimit-* headers discord.py learns buckets from;
    the 6th send in a channel's window gets Discord's 429 (body, Retry-After, Scope and
    the ``Via`` header without which discord.py assumes a Cloudflare ban), and an edit
    in the same channel is refused too: sends and edits share one limit but report
    different bucket hashes."""
    headers = {"Authorization": f"Bot {fake.bot_token}"}
    url = f"{fake.api_url}/channels/{CHANNEL_ID}/messages"
    async with aiohttp.ClientSession(headers=headers) as http:
        remaining: list[str] = []
        ids: list[str] = []
        for i in range(5):
            async with http.post(url, json={"content": f"m{i}"}) as resp:
                assert resp.status == 200
                assert resp.headers["X-RateLimit-Limit"] == "5"
                assert 0 < float(resp.headers["X-RateLimit-Reset-After"]) <= 5
                assert float(resp.headers["X-RateLimit-Reset"]) > time.time()
                remaining.append(resp.headers["X-RateLimit-Remaining"])
                send_bucket = resp.headers["X-RateLimit-Bucket"]
                ids.append((await resp.json())["id"])
        assert remaining == ["4", "3", "2", "1", "0"]

        async with http.post(url, json={"content": "one too many"}) as resp:
            assert resp.status == 429
            body = await resp.json()
            assert body["message"] == "You are being rate limited."
            assert body["global"] is False
            assert 0 < body["retry_after"] <= 5
            assert resp.headers["Via"] == "1.1 google"
            assert resp.headers["X-RateLimit-Scope"] == "user"
            assert int(resp.headers["Retry-After"]) >= 1
            assert "X-RateLimit-Global" not in resp.headers

        async with http.patch(f"{url}/{ids[0]}", json={"content": "edited"}) as resp:
            assert resp.status == 429
            assert resp.headers["X-RateLimit-Bucket"] != send_bucket

    assert fake.rate_limited[f"channel_messages:{CHANNEL_ID}"] == 2
    assert fake.message(CHANNEL_ID, int(ids[0])).content == "m0"


async def test_mixed_sends_and_edits_get_429s_that_discord_py_retries(fake: FakeDiscord) -> None:
    """Hammering one channel with edits while other sends happen there: discord.py paces
    each route by its own headers, so the shared send/edit limit produces 429s at the
    fake — the situation of several replies streaming in one channel. discord.py sleeps
    Retry-After and retries, so every call still lands, in order."""
    fake.limits.channel_messages = Limit(3, 0.4)
    async with connected(fake) as client:
        channel = text_channel(client)
        first = await channel.send("0")

        async def edits() -> None:
            msg = first
            for i in range(1, 7):
                msg = await msg.edit(content=f"edit {i}")

        async def sends() -> None:
            for i in range(3):
                await channel.send(f"other reply {i}")

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(edits(), sends()), 8)
        elapsed = time.monotonic() - started

    limited = fake.rate_limited[f"channel_messages:{CHANNEL_ID}"]
    assert limited >= 1, "no 429: the shared limit was not enforced"
    rec = fake.message(CHANNEL_ID, first.id)
    assert rec.content == "edit 6"
    assert [r.content for r in rec.edits] == [f"edit {i}" for i in range(1, 7)]
    assert len(fake.channel_messages(CHANNEL_ID)) == 4
    too_many = [c for c in fake.calls if c.status == 429]
    assert len(too_many) == limited
    assert all(c.headers.get("Via") == "1.1 google" for c in too_many)
    # 10 sends/edits at 3 per 0.4 s need at least three full windows.
    assert elapsed >= 0.8


async def test_global_limit_is_per_token_and_discord_py_waits_it_out(fake: FakeDiscord) -> None:
    """Past the global per-second limit Discord answers 429 with ``global: true`` and
    ``X-RateLimit-Global``; discord.py then holds ALL requests until it passes."""
    fake.limits.global_per_second = 5
    async with connected(fake) as client:
        fake.reset_rate_limits()  # login's calls out of the window: 8 fetches need 2 windows
        channels = await asyncio.wait_for(
            asyncio.gather(*(client.fetch_channel(CHANNEL_ID) for _ in range(8))), 8
        )
    assert {c.id for c in channels} == {CHANNEL_ID}
    assert fake.rate_limited["global"] >= 1
    global_429 = next(c for c in fake.calls if c.bucket == "global" and c.status == 429)
    assert global_429.headers["X-RateLimit-Global"] == "true"
    assert global_429.headers["X-RateLimit-Scope"] == "global"
    assert global_429.response["global"] is True


# --------------------------------------------------------------------------- interactions


async def test_slash_command_defer_edit_followup(fake: FakeDiscord) -> None:
    """The streaming path for /commands: the tree receives INTERACTION_CREATE, defers
    with thinking, edits @original twice, sends a followup — and the fake records the
    loading message turning into the answer."""
    client = discord.Client(intents=MINIMAL, guild_ready_timeout=0.05)
    tree = app_commands.CommandTree(client)
    done: asyncio.Future[discord.WebhookMessage] = asyncio.get_running_loop().create_future()

    @tree.command(name="ask", description="Ask the model")
    async def ask(interaction: discord.Interaction, prompt: str) -> None:
        try:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"thinking about {prompt}")
            await interaction.edit_original_response(content=f"answer to {prompt}")
            followup = await interaction.followup.send("and one more thing", wait=True)
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(followup)

    async def sync(_: discord.Client) -> None:
        await tree.sync()

    async with connected(fake, client, after_ready=sync):
        assert [c["name"] for c in fake.commands] == ["ask"]
        assert fake.commands[0]["options"][0]["type"] == 3  # STRING
        rec = await fake.inject_slash_command(
            "ask", {"prompt": "life"}, ALICE, CHANNEL_ID, GUILD_ID
        )
        followup = await asyncio.wait_for(done, 5)

    assert rec.deferred and rec.callback_type == 5
    assert rec.original is not None
    assert rec.original.content == "answer to life"
    assert not rec.original.flags & FLAG_LOADING
    assert [r.content for r in rec.original.history] == [
        "",
        "thinking about life",
        "answer to life",
    ]
    assert [m.id for m in rec.followups] == [followup.id]
    assert fake.rendered(CHANNEL_ID, followup.id) == "and one more thing"
    assert (
        len(fake.calls_to("PATCH", "webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"))
        == 2
    )


async def test_expired_interaction_token_is_unknown_webhook() -> None:
    """Interaction tokens die (15 min on Discord); afterwards edits get 404/10015, which
    chatrelay must turn into a channel-message fallback for long streams."""
    async with serve(interaction_ttl=0.3) as fake:
        client = discord.Client(intents=MINIMAL, guild_ready_timeout=0.05)
        tree = app_commands.CommandTree(client)
        outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        @tree.command(name="ask", description="Ask the model")
        async def ask(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await asyncio.sleep(0.4)
            try:
                await interaction.edit_original_response(content="too late")
            except Exception as exc:
                outcome.set_result(exc)
            else:
                outcome.set_result(None)

        async with connected(fake, client):
            rec = await fake.inject_slash_command("ask")
            error = await asyncio.wait_for(outcome, 5)

    assert isinstance(error, discord.NotFound)
    assert error.code == 10015
    assert rec.original is not None and rec.original.flags & FLAG_LOADING


async def test_late_callback_is_unknown_interaction() -> None:
    """The first answer must come within the deadline (3 s on Discord); a late defer
    gets 404/10062 — why chatrelay defers before doing anything slow."""
    async with serve(callback_deadline=0.1) as fake:
        client = discord.Client(intents=MINIMAL, guild_ready_timeout=0.05)
        tree = app_commands.CommandTree(client)
        outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        @tree.command(name="ask", description="Ask the model")
        async def ask(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.2)
            try:
                await interaction.response.defer(thinking=True)
            except Exception as exc:
                outcome.set_result(exc)
            else:
                outcome.set_result(None)

        async with connected(fake, client):
            rec = await fake.inject_slash_command("ask")
            error = await asyncio.wait_for(outcome, 5)

    assert isinstance(error, discord.NotFound)
    assert error.code == 10062
    assert not rec.acknowledged


async def test_button_press_updates_the_message(fake: FakeDiscord) -> None:
    """A component press (INTERACTION_CREATE type 3) reaches the discord.py View that
    sent the button, and an UPDATE_MESSAGE callback edits that message — the shape of
    chatrelay's stop button."""
    async with connected(fake) as client:
        channel = text_channel(client)
        pressed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        view = discord.ui.View(timeout=None)
        button: discord.ui.Button[discord.ui.View] = discord.ui.Button(
            label="Stop", custom_id="stop"
        )

        async def on_stop(interaction: discord.Interaction) -> None:
            await interaction.response.edit_message(content="stopped", view=None)
            pressed.set_result(interaction.user.id)

        button.callback = on_stop  # type: ignore[method-assign]
        view.add_item(button)
        msg = await channel.send("streaming…", view=view)
        rec = fake.message(CHANNEL_ID, msg.id)
        assert rec.components[0]["components"][0]["custom_id"] == "stop"

        interaction = await fake.inject_component("stop", msg.id, BOB, CHANNEL_ID)
        assert await asyncio.wait_for(pressed, 5) == BOB.id

    assert interaction.callback_type == 7
    assert rec.content == "stopped"
    assert rec.components == []


async def test_threads_and_typing(fake: FakeDiscord) -> None:
    """A thread started from a message takes that message's id, is announced by
    THREAD_CREATE and is a separate channel (with its own message limit)."""
    created: asyncio.Queue[discord.Thread] = asyncio.Queue()
    client = discord.Client(intents=MINIMAL, guild_ready_timeout=0.05)

    @client.event
    async def on_thread_create(thread: discord.Thread) -> None:
        await created.put(thread)

    async with connected(fake, client):
        channel = text_channel(client)
        async with channel.typing():
            question = await channel.send("question")
        thread = await question.create_thread(name="conversation")
        assert thread.id == question.id
        announced = await asyncio.wait_for(created.get(), 2)
        assert announced.id == thread.id and announced.parent_id == CHANNEL_ID
        reply = await thread.send("in the thread")

    assert fake.channels[thread.id].parent_id == CHANNEL_ID
    assert [m.id for m in fake.channel_messages(thread.id)] == [reply.id]
    assert fake.calls_to("POST", "channels/{channel_id}/typing")
    assert f"channel_messages:{thread.id}" in {c.bucket for c in fake.calls}


# --------------------------------------------------------------------------- fault schedule


def bot_http(fake: FakeDiscord) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bot {fake.bot_token}"})


async def test_injected_429_is_discords_and_discord_py_retries_it(fake: FakeDiscord) -> None:
    """An injected 429 carries what discord.py needs to trust it (JSON body, ``Via``,
    the bucket headers), so discord.py sleeps ``retry_after`` and retries; the faulted
    edits change nothing, and the fake's own limits count no 429."""
    fake.faults.add(EDIT_MESSAGE, "429", count=2, retry_after=0.05)
    async with connected(fake) as client:
        message = await text_channel(client).send("draft")
        await asyncio.wait_for(message.edit(content="final"), 5)

    patches = fake.calls_to("PATCH", "channels/{channel_id}/messages/{message_id}")
    assert [(c.ordinal, c.injected, c.status) for c in patches] == [
        (1, "429", 429),
        (2, "429", 429),
        (3, None, 200),
    ]
    limited = patches[0]
    assert limited.response == {
        "message": "You are being rate limited.",
        "retry_after": 0.05,
        "global": False,
    }
    assert limited.headers["Via"] == "1.1 google"
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["X-RateLimit-Limit"] == "5"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Reset-After"] == "0.050"
    assert limited.headers["X-RateLimit-Scope"] == "user"
    assert limited.headers["X-RateLimit-Bucket"] == patches[2].headers["X-RateLimit-Bucket"]
    assert [r.content for r in fake.message(CHANNEL_ID, message.id).edits] == ["final"]
    assert fake.rate_limited == {}
    assert fake.natural_429s() == 0
    assert fake.faults.count(EDIT_MESSAGE, "429") == 2
    assert fake.injected_calls("429") == patches[:2]


async def test_injected_500_and_drop_apply_nothing(fake: FakeDiscord) -> None:
    """Over raw HTTP (discord.py retries 500s after seconds of backoff): a 500 with
    Discord's body, and a connection closed without an answer; no message either way."""
    url = f"{fake.api_url}/channels/{CHANNEL_ID}/messages"
    fake.faults.add(SEND_MESSAGE, "500")
    fake.faults.add(SEND_MESSAGE, "drop")
    async with bot_http(fake) as http:
        async with http.post(url, json={"content": "one"}) as resp:
            assert resp.status == 500
            assert resp.headers["Content-Type"] == "application/json"
            assert await resp.json() == {"message": "500: Internal Server Error", "code": 0}
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await http.post(url, json={"content": "two"})
        async with http.post(url, json={"content": "three"}) as resp:
            assert resp.status == 200
    assert [m.content for m in fake.channel_messages(CHANNEL_ID)] == ["three"]
    sends = fake.calls_to("POST", "channels/{channel_id}/messages")
    assert [(c.injected, c.status) for c in sends] == [("500", 500), ("drop", 0), (None, 200)]
    with pytest.raises(ValueError, match="cannot answer"):
        fake.faults.add(SEND_MESSAGE, "internal_error")  # a Slack-only answer


async def test_slow_answer_is_applied_after_the_client_gave_up(fake: FakeDiscord) -> None:
    """``slow`` holds the answer but applies the call: a client that timed out can't
    tell, and a blind retry would post twice."""
    fake.faults.add(SEND_MESSAGE, "slow", delay=0.5)
    url = f"{fake.api_url}/channels/{CHANNEL_ID}/messages"
    async with bot_http(fake) as http:
        with pytest.raises(TimeoutError):
            await http.post(url, json={"content": "late"}, timeout=aiohttp.ClientTimeout(0.1))
        call = await fake.wait_for_call("POST", "messages$", timeout=2)
    assert (call.injected, call.status) == ("slow", 200)
    assert [m.content for m in fake.channel_messages(CHANNEL_ID)] == ["late"]


async def test_fault_keys_in_discords_spelling_narrow_to_original(fake: FakeDiscord) -> None:
    """Discord documents ``PATCH /webhooks/{application.id}/{interaction.token}/messages/
    @original``: the fake maps it to its route and faults only ``@original`` edits, so a
    followup's edit in between goes through."""
    key, path = fake.fault_key(
        "PATCH /webhooks/{application.id}/{interaction.token}/messages/@original"
    )
    assert key == EDIT_INTERACTION_MESSAGE
    assert path is not None and path.search("webhooks/1/tok/messages/@original")
    assert not path.search("webhooks/1/tok/messages/123")
    assert fake.fault_key("GET /users/@me") == ("GET users/@me", None)
    assert fake.fault_key("patch channels/{id}/messages/{id}") == (EDIT_MESSAGE, None)
    with pytest.raises(ValueError, match="no route"):
        fake.fault_key("PATCH /nowhere")

    client = discord.Client(intents=MINIMAL, guild_ready_timeout=0.05)
    tree = app_commands.CommandTree(client)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @tree.command(name="ask", description="Ask the model")
    async def ask(interaction: discord.Interaction) -> None:
        try:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content="answer")
            followup = await interaction.followup.send("more", wait=True)
            fake.faults.add(
                "PATCH /webhooks/{application.id}/{interaction.token}/messages/@original",
                "429",
                retry_after=0.05,
            )
            await followup.edit(content="more, edited")  # not @original: not faulted
            await interaction.edit_original_response(content="answer, edited")  # retried
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    async def sync(_: discord.Client) -> None:
        await tree.sync()

    async with connected(fake, client, after_ready=sync):
        rec = await fake.inject_slash_command("ask")
        await asyncio.wait_for(done, 5)

    edits = fake.calls_to("PATCH", "webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
    assert [(c.path.rsplit("/", 1)[1], c.injected) for c in edits] == [
        ("@original", None),
        (str(rec.followups[0].id), None),
        ("@original", "429"),
        ("@original", None),
    ]
    assert rec.original is not None and rec.original.content == "answer, edited"


async def test_seeded_schedule_gives_the_same_faults_for_the_same_seed() -> None:
    async def faults_seen(seed: int) -> list[tuple[int, str | None, int]]:
        async with serve() as fake, bot_http(fake) as http:
            fake.faults.schedule(seed, ["GET /channels/{channel_id}"], p_429=0.3, p_500=0.3)
            for _ in range(20):
                async with http.get(f"{fake.api_url}/channels/{CHANNEL_ID}") as resp:
                    await resp.read()
            calls = fake.calls_to("GET", "channels/{channel_id}")
            planned = fake.faults.planned("GET channels/{channel_id}", 20)
            assert planned == [c.injected for c in calls]
            return [(c.ordinal, c.injected, c.status) for c in calls]

    first = await faults_seen(5)
    assert first == await faults_seen(5)
    assert first != await faults_seen(6)
    assert {kind for _, kind, _ in first} == {None, "429", "500"}


async def test_fail_next_is_recorded_as_injected(fake: FakeDiscord) -> None:
    fake.fail_next("POST", r"channels/\d+/messages$", 503, {"message": "busy", "code": 0})
    async with bot_http(fake) as http:
        url = f"{fake.api_url}/channels/{CHANNEL_ID}/messages"
        async with http.post(url, json={"content": "x"}) as resp:
            assert resp.status == 503 and await resp.json() == {"message": "busy", "code": 0}
    assert fake.channel_messages(CHANNEL_ID) == []
    assert [c.injected for c in fake.calls] == ["error"]


# --------------------------------------------------------------------------- gateway RESUME


async def test_dropped_connection_resumes_and_replays_what_was_missed(fake: FakeDiscord) -> None:
    """A connection cut without a close frame (a network failure): the session stays,
    an event dispatched meanwhile is kept, and the real discord.py reconnects to READY's
    ``resume_gateway_url``, RESUMEs and gets that event before RESUMED — no new
    IDENTIFY, no lost message."""
    seen: asyncio.Queue[discord.Message] = asyncio.Queue()
    resumed = asyncio.Event()
    client = discord.Client(intents=MINIMAL, guild_ready_timeout=0.05)

    @client.event
    async def on_message(message: discord.Message) -> None:
        await seen.put(message)

    @client.event
    async def on_resumed() -> None:
        resumed.set()

    async with connected(fake, client):
        [session] = fake.live_sessions
        last_seen = session.seq
        assert await fake.kill_connections() == 1
        assert (session.state, session.connection) == ("resumable", None)
        missed = await fake.inject_message(
            CHANNEL_ID, "while you were away", ALICE, mentions_bot=True
        )
        assert session.connection is None and session.seq == last_seen + 1  # kept, not sent

        received = await asyncio.wait_for(seen.get(), 5)
        assert received.id == missed.id
        assert received.content == f"<@{BOT_USER_ID}> while you were away"
        await asyncio.wait_for(resumed.wait(), 5)
        assert fake.resumes == [
            {"session_id": session.id, "seq": last_seen, "replayed": 1, "path": "/resume-gateway"}
        ]
        assert [e["t"] for e in session.events[-2:]] == ["MESSAGE_CREATE", "RESUMED"]
        assert (session.state, session.resumes, len(fake.identifies)) == ("connected", 1, 1)

        after = await fake.inject_message(CHANNEL_ID, "and now", ALICE, mentions_bot=True)
        assert (await asyncio.wait_for(seen.get(), 5)).id == after.id


async def test_expired_session_is_invalid_and_discord_py_identifies_anew(
    fake: FakeDiscord,
) -> None:
    """Past the resume window the RESUME gets op 9 INVALID_SESSION ``d: false``;
    discord.py then forgets the session and IDENTIFYs anew (the event dispatched while
    it was away is lost with the session)."""

    class Impatient(discord.Client):
        async def before_identify_hook(
            self, shard_id: int | None, *, initial: bool = False
        ) -> None:
            """discord.py waits 5 s before a re-IDENTIFY (the identify rate limit)."""

    seen: asyncio.Queue[discord.Message] = asyncio.Queue()
    client = Impatient(intents=MINIMAL, guild_ready_timeout=0.05)

    @client.event
    async def on_message(message: discord.Message) -> None:
        await seen.put(message)

    async with connected(fake, client):
        [old] = fake.live_sessions
        await fake.kill_connections()
        fake.expire_sessions()
        assert await fake.dispatch("TYPING_START", {"channel_id": str(CHANNEL_ID)}) == 0
        await fake.wait_until(lambda: fake.connections and fake.connections[0].session)
        [new] = fake.live_sessions
        [conn] = fake.connections
        later = await fake.inject_message(CHANNEL_ID, "after", ALICE, mentions_bot=True)
        assert (await asyncio.wait_for(seen.get(), 5)).id == later.id
    assert [i["session_id"] for i in fake.invalid_sessions] == [old.id]
    assert fake.resumes == [] and len(fake.identifies) == 2
    assert old.state == "invalidated" and new.id != old.id and new.seq > 2
    assert conn.identify == fake.identifies[1]


async def raw_identify(
    http: aiohttp.ClientSession, fake: FakeDiscord
) -> tuple[aiohttp.ClientWebSocketResponse, str, int]:
    """A bare gateway client: HELLO, IDENTIFY, READY and GUILD_CREATE; returns the
    socket, the session id and the last seq."""
    ws = await http.ws_connect(f"{fake.gateway_url}?v=10&encoding=json")
    assert (await ws.receive_json())["op"] == 10
    identify = {"token": fake.bot_token, "intents": MINIMAL.value, "properties": {}}
    await ws.send_json({"op": 2, "d": identify})
    ready = await ws.receive_json()
    assert ready["t"] == "READY" and ready["d"]["resume_gateway_url"] == fake.resume_gateway_url
    guild = await ws.receive_json()
    assert guild["t"] == "GUILD_CREATE"
    return ws, ready["d"]["session_id"], guild["s"]


async def raw_resume(
    http: aiohttp.ClientSession, fake: FakeDiscord, session_id: str, seq: int
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{fake.resume_gateway_url}?v=10&encoding=json")
    assert (await ws.receive_json())["op"] == 10
    resume = {"token": fake.bot_token, "session_id": session_id, "seq": seq}
    await ws.send_json({"op": 6, "d": resume})
    return ws


async def test_a_session_closed_with_1000_cannot_be_resumed(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        ws, session_id, seq = await raw_identify(http, fake)
        await ws.close(code=1000)
        await fake.wait_until(lambda: fake.sessions[session_id].state == "invalidated")
        again = await raw_resume(http, fake, session_id, seq)
        assert await again.receive_json() == {"op": 9, "d": False, "s": None, "t": None}
        await again.close()
        unknown = await raw_resume(http, fake, "no-such-session", 0)
        assert (await unknown.receive_json())["op"] == 9
        await unknown.close()
    assert [i["session_id"] for i in fake.invalid_sessions] == [session_id, "no-such-session"]


async def test_resume_after_a_resumable_close_replays_in_order(fake: FakeDiscord) -> None:
    """The gateway closing with 4000 keeps the session: a RESUME from a ``seq`` it never
    sent is closed with 4007, the right one gets the missed dispatches then RESUMED, and
    a RESUME of a session still connected elsewhere takes it over (the old connection,
    a zombie, is cut)."""
    async with aiohttp.ClientSession() as http:
        ws, session_id, seq = await raw_identify(http, fake)
        await fake.disconnect_all(4000)
        closing = await ws.receive()
        assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 4000)
        await fake.wait_until(lambda: fake.sessions[session_id].state == "resumable")
        first = await fake.inject_message(CHANNEL_ID, "one", ALICE, mentions_bot=True)
        second = await fake.inject_message(CHANNEL_ID, "two", ALICE, mentions_bot=True)

        ahead = await raw_resume(http, fake, session_id, seq + 10)
        refused = await ahead.receive()
        assert (refused.type, refused.data) == (aiohttp.WSMsgType.CLOSE, 4007)

        resumed = await raw_resume(http, fake, session_id, seq)
        replay = [await resumed.receive_json() for _ in range(3)]
        assert [(p["t"], p["s"]) for p in replay] == [
            ("MESSAGE_CREATE", seq + 1),
            ("MESSAGE_CREATE", seq + 2),
            ("RESUMED", seq + 3),
        ]
        assert [p["d"]["id"] for p in replay[:2]] == [str(first.id), str(second.id)]

        takeover = await raw_resume(http, fake, session_id, seq + 1)
        assert [(p["t"], p["s"]) for p in [await takeover.receive_json() for _ in range(3)]] == [
            ("MESSAGE_CREATE", seq + 2),
            ("RESUMED", seq + 3),
            ("RESUMED", seq + 4),
        ]
        cut = await resumed.receive()
        assert cut.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        await takeover.close()
    assert [(r["seq"], r["replayed"]) for r in fake.resumes] == [(seq, 2), (seq + 1, 2)]
