"""The fake Discord's recorded state: its settings (token, limits, deadlines), the
world (guilds, channels, users), what it recorded (messages, interactions, calls,
gateway connections and sessions) and the ways to read, wait for and fault it."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable

from tests.fakes.discord_server.constants import (
    CHANNEL_DM,
    DISCORD_EPOCH_MS,
    FLAG_SUPPRESS_EMBEDS,
    Json,
)
from tests.fakes.discord_server.limits import RateLimits, Window
from tests.fakes.discord_server.records import CallRecord, InteractionRecord, MessageRecord
from tests.fakes.discord_server.routing import Route
from tests.fakes.discord_server.sessions import GatewayConnection, GatewaySession
from tests.fakes.discord_server.world import (
    APP_ID,
    BOT_USER_ID,
    FakeChannel,
    FakeGuild,
    FakeUser,
    default_guilds,
)
from tests.fakes.faults import ALL_KINDS, Fault, FaultSchedule, kind_for_status
from tests.fakes.server import FakeServer


class DiscordState(FakeServer):
    """One bot's Discord as the fake keeps it: settings, the world, what it recorded
    and the ways to read, wait for and fault it. The REST families, the gateway and
    the injection of user actions build on it (``FakeDiscord`` puts them together)."""

    def __init__(
        self,
        *,
        bot_token: str = "test-token",
        app_id: int = APP_ID,
        bot_user_id: int = BOT_USER_ID,
        bot_name: str = "chatrelay",
        guilds: list[FakeGuild] | None = None,
        limits: RateLimits | None = None,
        heartbeat_interval_ms: int = 41_250,
        interaction_ttl: float = 900.0,
        callback_deadline: float = 3.0,
        allow_privileged_intents: bool = True,
        resume_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.app_id = app_id
        self.bot = FakeUser(bot_user_id, bot_name, bot=True)
        self.limits = limits or RateLimits()
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_ttl = interaction_ttl
        """Seconds an interaction token works for webhook calls (Discord: 15 min)."""
        self.callback_deadline = callback_deadline
        """Seconds to answer an interaction's callback (Discord: 3 s)."""
        self.allow_privileged_intents = allow_privileged_intents
        """False: an IDENTIFY asking for a privileged intent is closed with 4014."""
        self.ack_heartbeats = True
        """False: heartbeats go unanswered (a zombie connection)."""
        self.cloudflare_banned = False
        """True: every REST call gets Cloudflare's 429 (HTML, no ``Via``)."""
        self.resume_timeout = resume_timeout
        """Seconds a session whose connection dropped stays resumable."""

        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.users: dict[int, FakeUser] = {self.bot.id: self.bot}
        self.messages: dict[int, dict[int, MessageRecord]] = {}
        """channel id → message id → record (deleted ones stay, flagged)."""
        self.interactions: dict[str, InteractionRecord] = {}
        """token → record."""
        self.commands: list[Json] = []
        """Global application commands, as last PUT (with ids)."""
        self.guild_commands: dict[int, list[Json]] = {}
        self.calls: list[CallRecord] = []
        self.rate_limited: Counter[str] = Counter()
        """429s per bucket: ``channel_messages:<channel>``, ``interaction:<id>``,
        ``global``, or ``<METHOD> <route>:<major>``."""
        self.connections: list[GatewayConnection] = []
        """Open gateway connections."""
        self.identifies: list[Json] = []
        """Every accepted IDENTIFY's ``d`` (token included)."""
        self.gateway_queries: list[dict[str, str]] = []
        """The query string of every gateway connection (``v``, ``encoding``, ``compress``)."""
        self.gateway_sends: list[Json] = []
        """Every payload a client sent on the gateway, in order."""
        self.sessions: dict[str, GatewaySession] = {}
        """Gateway sessions by id, ended ones included (``state`` says which)."""
        self.resumes: list[Json] = []
        """Every accepted RESUME: ``session_id``, ``seq`` (the client's), ``replayed``
        (how many dispatches were sent again) and ``path`` (the URL it came to)."""
        self.invalid_sessions: list[Json] = []
        """Every RESUME answered with op 9 INVALID_SESSION (its ``d``, token masked)."""

        for guild in guilds if guilds is not None else default_guilds():
            self.add_guild(guild)

        self._last_id = 0
        self._windows: dict[str, Window] = {}
        self._global_window: Window | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._routes = self._build_routes()
        self.faults = FaultSchedule(
            kinds=ALL_KINDS - {"internal_error"},
            resolve=self.fault_key,
            known=lambda key: any(f"{r.method} {r.template}" == key for r in self._routes),
        )
        """Scripted and seeded faults per route (see ``tests.fakes.faults``), keyed like
        :data:`EDIT_MESSAGE`: ``fake.faults.add(EDIT_MESSAGE, "429", retry_after=0.2)``.
        A faulted call (other than ``slow``) is answered after the token check and
        before the rate limits and the handler: it changes nothing, uses up no window."""

    def _build_routes(self) -> list[Route]:
        """The REST routes in matching order; ``FakeDiscord`` lists the families' handlers."""
        raise NotImplementedError

    @property
    def api_url(self) -> str:
        """In ``discord.http.Route.BASE`` form: ``http://127.0.0.1:PORT/api/v10``."""
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """READY's ``resume_gateway_url``: a path of its own, so a test can see that a
        client resumed there (``GatewayConnection.path``) as Discord asks."""
        return f"ws://127.0.0.1:{self.port}/resume-gateway"

    # ------------------------------------------------------------------ world setup

    def add_guild(self, guild: FakeGuild) -> FakeGuild:
        if not guild.bot_role_id:
            guild.bot_role_id = guild.id + 7
        self.guilds[guild.id] = guild
        for channel in guild.channels:
            channel.guild_id = guild.id
            self.channels[channel.id] = channel
            self.messages.setdefault(channel.id, {})
        for member in guild.members:
            self.users[member.id] = member
        return guild

    def add_dm_channel(self, user: FakeUser, channel_id: int | None = None) -> FakeChannel:
        """A DM between ``user`` and the bot (shard 0 gets its events)."""
        self.users[user.id] = user
        channel = FakeChannel(
            id=channel_id or self._next_id(), name="", type=CHANNEL_DM, recipients=[user]
        )
        self.channels[channel.id] = channel
        self.messages.setdefault(channel.id, {})
        return channel

    def _next_id(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(candidate, self._last_id + 1)
        return self._last_id

    # ------------------------------------------------------------------ inspection

    def message(self, channel_id: int, message_id: int) -> MessageRecord:
        return self.messages[channel_id][message_id]

    def channel_messages(self, channel_id: int) -> list[MessageRecord]:
        """Live (not deleted) messages of a channel, oldest first."""
        return [m for m in self.messages.get(channel_id, {}).values() if not m.deleted]

    def rendered(self, channel_id: int, message_id: int) -> str:
        """The text a user sees: content, then each embed's title, description, fields
        (``name: value``) and footer, one per line, empty parts skipped."""
        rec = self.messages[channel_id][message_id]
        parts = [rec.content]
        if not rec.flags & FLAG_SUPPRESS_EMBEDS:
            for embed in rec.embeds:
                parts += [embed.get("title") or "", embed.get("description") or ""]
                parts += [
                    f"{f.get('name', '')}: {f.get('value', '')}" for f in embed.get("fields", [])
                ]
                parts.append((embed.get("footer") or {}).get("text") or "")
        return "\n".join(p for p in parts if p)

    def calls_to(self, method: str, route: str) -> list[CallRecord]:
        """Calls matching a method and a route template, e.g.
        ``calls_to("PATCH", "channels/{channel_id}/messages/{message_id}")``."""
        return [c for c in self.calls if c.method == method and c.route == route]

    @property
    def invalid_requests(self) -> int:
        """401/403/429 answers that count toward Cloudflare's ban (shared-scope 429s don't)."""
        return sum(
            1
            for c in self.calls
            if c.status in (401, 403)
            or (c.status == 429 and c.headers.get("X-RateLimit-Scope") != "shared")
        )

    async def wait_for_call(
        self,
        method: str,
        path_regex: str,
        *,
        count: int = 1,
        status: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded wait is the point of the helper
    ) -> CallRecord:
        """Waits until ``count`` answered calls match (``re.search`` on the path) and
        returns the last of them."""
        pattern = re.compile(path_regex)

        def matches() -> list[CallRecord]:
            return [
                c
                for c in self.calls
                if c.method == method
                and c.status
                and pattern.search(c.path)
                and (status is None or c.status == status)
            ]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(matches()) >= count)
        return matches()[count - 1]

    async def wait_until(self, condition: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109 - bounded by design
        """Until ``condition()`` is truthy, re-checked after each REST call answered and
        each gateway IDENTIFY, RESUME, INVALID_SESSION or closed connection."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: bool(condition()))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def expire_interaction(self, token: str) -> None:
        """Makes the token as dead as after ``interaction_ttl``."""
        self.interactions[token].expired = True

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 500,
        body: Json | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answers the next ``times`` matching calls with this error (after auth, before
        rate limits and the handler). A rule of ``faults``, recorded like the others."""
        default = {"message": "500: Internal Server Error", "code": 0}
        fault = Fault(
            kind_for_status(status), retry_after=None, status=status, body=body or default
        )
        self.faults.add_rule(
            fault, http_method=method.upper(), path=re.compile(path_regex), count=times
        )

    def fault_key(self, key: str) -> tuple[str, re.Pattern[str] | None]:
        """The canonical route key for a key as a test writes it, and a path filter when
        it names a literal where the route has a parameter.

        Accepted: the fake's templates (``"PATCH channels/{channel_id}/messages/{message_id}"``)
        and Discord's documentation style, with a leading slash, any parameter names and
        literals: ``"PATCH /webhooks/{application.id}/{interaction.token}/messages/@original"``
        is the interaction-message edit route, limited to ``@original``."""
        method, _, path = key.strip().partition(" ")
        method = method.upper()
        given = path.strip().strip("/").split("/")
        best: tuple[int, Route] | None = None
        for route in self._routes:
            template = route.template.split("/")
            if route.method != method or len(template) != len(given):
                continue
            exact = 0
            for want, have in zip(template, given, strict=True):
                if want.startswith("{") or have.startswith("{"):
                    if not want.startswith("{"):
                        break  # a parameter where the route has a literal
                elif want != have:
                    break
                else:
                    exact += 1
            else:
                if best is None or exact > best[0]:
                    best = (exact, route)
        if best is None:
            raise ValueError(f"no route of the fake matches {key!r}")
        route = best[1]
        literals = [
            not have.startswith("{") and want.startswith("{")
            for want, have in zip(route.template.split("/"), given, strict=True)
        ]
        path_filter = None
        if any(literals):
            regex = "/".join("[^/]+" if have.startswith("{") else re.escape(have) for have in given)
            path_filter = re.compile(f"^{regex}$")
        return f"{route.method} {route.template}", path_filter

    def natural_429s(self, key: str | None = None) -> int:
        """429s the fake's own rate limits (or Cloudflare ban) answered, injected ones
        left out: what a bot pacing itself within Discord's limits never causes."""
        canonical = self.fault_key(key)[0] if key is not None else None
        return sum(
            1
            for c in self.calls
            if c.status == 429 and c.injected is None and (canonical is None or c.key == canonical)
        )

    def injected_calls(self, kind: str | None = None) -> list[CallRecord]:
        """Calls ``faults`` put a fault on, optionally of one kind."""
        return [c for c in self.calls if c.injected is not None and kind in (None, c.injected)]
